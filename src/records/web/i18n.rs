//! The console's languages: Chinese first, English second. Texts live in Fluent
//! files (`locales/<lang>/*.ftl`, one per page area) compiled into the binary; the language is
//! the user's choice (a cookie set by the language switch), else the browser's
//! `Accept-Language`, else Chinese.

use fluent_templates::{LanguageIdentifier, Loader};

fluent_templates::static_loader! {
    static LOCALES = {
        locales: "./src/records/web/locales",
        fallback_language: "zh-CN",
        // No Unicode isolation marks around arguments: they would show in copied text.
        customise: |bundle| bundle.set_use_isolating(false),
    };
}

/// Name of the cookie that keeps the user's language.
pub const LANG_COOKIE: &str = "courtline_lang";

/// A language of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Simplified Chinese, the default.
    ZhCn,
    /// English.
    EnUs,
}

impl Lang {
    /// Every language, the default first.
    pub const ALL: [Lang; 2] = [Lang::ZhCn, Lang::EnUs];

    /// The BCP 47 tag (`lang` attribute, cookie value).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::EnUs => "en-US",
        }
    }

    /// The language of a tag as the cookie or the switch gives it.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        Lang::ALL
            .into_iter()
            .find(|lang| lang.tag().eq_ignore_ascii_case(tag.trim()))
    }

    fn identifier(self) -> LanguageIdentifier {
        match self {
            Lang::ZhCn => fluent_templates::langid!("zh-CN"),
            Lang::EnUs => fluent_templates::langid!("en-US"),
        }
    }

    /// The text of `key` in this language.
    pub fn text(self, key: &str) -> String {
        LOCALES.lookup(&self.identifier(), key)
    }
}

/// The language to show: the cookie's, else the best of `Accept-Language` that we
/// have (by q value, then order), else Chinese.
pub fn choose(cookie: Option<&str>, accept_language: Option<&str>) -> Lang {
    if let Some(lang) = cookie.and_then(Lang::from_tag) {
        return lang;
    }
    let mut best: Option<(f32, Lang)> = None;
    for range in accept_language.unwrap_or_default().split(',') {
        let mut parts = range.split(';');
        let tag = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .find_map(|part| part.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let lang = match tag.split('-').next() {
            Some("zh") => Lang::ZhCn,
            Some("en") => Lang::EnUs,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, lang));
        }
    }
    best.map_or(Lang::ZhCn, |(_, lang)| lang)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The message ids of every Fluent file of a language (lines `id = …` at the
    /// start of a line), each page's file included.
    fn keys(lang: &str) -> BTreeSet<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/records/web/locales")
            .join(lang);
        let mut keys = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).expect("locale folder") {
            let path = entry.expect("locale file").path();
            let ftl = std::fs::read_to_string(&path).expect("readable .ftl");
            for line in ftl.lines() {
                if line.starts_with([' ', '#', '-']) || line.trim().is_empty() {
                    continue;
                }
                if let Some((key, _)) = line.split_once('=') {
                    assert!(
                        keys.insert(key.trim().to_owned()),
                        "{} defines {} twice",
                        path.display(),
                        key.trim()
                    );
                }
            }
        }
        keys
    }

    #[test]
    fn every_key_exists_in_every_language() {
        let zh = keys("zh-CN");
        let en = keys("en-US");
        assert!(zh.len() > 40, "{zh:?}");
        let only_zh: Vec<_> = zh.difference(&en).collect();
        let only_en: Vec<_> = en.difference(&zh).collect();
        assert!(
            only_zh.is_empty() && only_en.is_empty(),
            "keys only in zh-CN: {only_zh:?}; keys only in en-US: {only_en:?}"
        );
        for key in &zh {
            assert_ne!(
                Lang::ZhCn.text(key),
                Lang::EnUs.text(key),
                "{key} is not translated"
            );
        }
    }

    #[test]
    fn texts_come_from_the_chosen_language() {
        assert_eq!(Lang::ZhCn.text("nav-calls"), "通话");
        assert_eq!(Lang::EnUs.text("nav-calls"), "Calls");
    }

    #[test]
    fn the_cookie_wins_then_accept_language_then_chinese() {
        assert_eq!(choose(Some("en-US"), Some("zh-CN")), Lang::EnUs);
        assert_eq!(choose(Some("fr"), Some("en-GB,en;q=0.8")), Lang::EnUs);
        assert_eq!(
            choose(None, Some("fr-FR, en;q=0.5, zh-TW;q=0.7")),
            Lang::ZhCn
        );
        assert_eq!(choose(None, Some("de, en;q=0.1")), Lang::EnUs);
        assert_eq!(choose(None, Some("en;q=0")), Lang::ZhCn);
        assert_eq!(choose(None, Some("fr")), Lang::ZhCn);
        assert_eq!(choose(None, None), Lang::ZhCn);
    }
}
