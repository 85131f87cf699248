//! One configuration from several files: the main file plus every `*.toml` of
//! its `[config] include_dir` (sorted by name), so that each court's lines,
//! prompts and hours live in a file of their own.
//!
//! Files are merged before anything is typed: `[[lines]]` add up in file
//! order, `[prompts.<id>]` and `[hours.<name>]` from different files combine.
//! [`Origins`] remembers where every line and section came from, so that a
//! problem found in the merged configuration is reported against the file the
//! admin has to edit, with the key as written there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// Sections an included file may hold; everything else belongs in the main
/// file, where one value cannot silently override another.
const INCLUDABLE: [&str; 3] = ["lines", "prompts", "hours"];

/// `[config]`: how the configuration is put together.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncludeConfig {
    /// Directory whose `*.toml` files are merged into this one, relative to
    /// the main file's directory; empty: none.
    pub include_dir: String,
}

/// Where each line and each prompt or hours section of a merged configuration
/// was written, for messages.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// The main file (or the name given to configuration text).
    main: String,
    /// For merged `lines[i]`: the file it came from and its index in that file.
    lines: Vec<(String, usize)>,
    /// For `prompts.<id>` and `hours.<name>`: the file that defines it.
    sections: BTreeMap<String, String>,
}

impl Origins {
    /// The file a merged key comes from, and the key as written in that file
    /// (`lines[7].number` may be `lines[0].number` of `conf.d/pudong.toml`).
    pub fn locate(&self, key: &str) -> (String, String) {
        if let Some(rest) = key.strip_prefix("lines[") {
            let (index, tail) = rest.split_once(']').unwrap_or((rest, ""));
            if let Some((file, local)) = index
                .parse::<usize>()
                .ok()
                .and_then(|index| self.lines.get(index))
            {
                return (file.clone(), format!("lines[{local}]{tail}"));
            }
        }
        let section = key.splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
        let file = self.sections.get(&section).unwrap_or(&self.main);
        (file.clone(), key.to_string())
    }

    /// `error` reported against the file (and the key in it) the admin must edit.
    pub fn relocate(&self, error: ConfigError) -> ConfigError {
        match error {
            ConfigError::Invalid {
                key, problem, fix, ..
            } => {
                let (file, key) = self.locate(&key);
                ConfigError::Invalid {
                    file,
                    key,
                    problem,
                    fix,
                }
            }
            load => load,
        }
    }
}

/// The values of one TOML file, untyped (typing happens once, on the merge).
pub fn read_file(path: &Path, name: &str) -> Result<serde_json::Value, ConfigError> {
    read_values(
        config::File::from(path)
            .format(config::FileFormat::Toml)
            .required(true),
        name,
    )
}

/// The values of configuration text (the built-in example, tests).
pub fn read_text(text: &str, name: &str) -> Result<serde_json::Value, ConfigError> {
    read_values(config::File::from_str(text, config::FileFormat::Toml), name)
}

/// A source's values, its problems reported against `name`.
fn read_values(
    source: impl config::Source + Send + Sync + 'static,
    name: &str,
) -> Result<serde_json::Value, ConfigError> {
    config::Config::builder()
        .add_source(source)
        .build()
        .and_then(|values| values.try_deserialize())
        .map_err(|e| ConfigError::Load {
            file: name.to_string(),
            message: format!(
                "{e}. Check the spelling and type of that key against config/courtline.toml"
            ),
        })
}

/// The main file's values with every included file's merged in, and where
/// each line and section came from. `base`: the main file's directory.
pub fn merge(
    mut main: serde_json::Value,
    base: &Path,
    main_name: &str,
) -> Result<(serde_json::Value, Origins), ConfigError> {
    let mut origins = Origins {
        main: main_name.to_string(),
        ..Origins::default()
    };
    let include_dir = main
        .pointer("/config/include_dir")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_string();
    record(&mut origins, &main, main_name);
    if include_dir.is_empty() {
        return Ok((main, origins));
    }
    for path in included_files(&base.join(&include_dir), main_name)? {
        let name = path.display().to_string();
        let values = read_file(&path, &name)?;
        add(&mut main, values, &name, &mut origins)?;
    }
    Ok((main, origins))
}

/// The `*.toml` files of `dir`, sorted by name.
fn included_files(dir: &Path, main_name: &str) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ConfigError::Invalid {
        file: main_name.to_string(),
        key: "config.include_dir".into(),
        problem: format!("cannot read the directory {} ({e})", dir.display()),
        fix: "Create it, or give a directory relative to this file that holds the courts' *.toml files.".into(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Notes the origin of every line and section of one file's `values`.
fn record(origins: &mut Origins, values: &serde_json::Value, file: &str) {
    let count = values
        .get("lines")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    origins
        .lines
        .extend((0..count).map(|local| (file.to_string(), local)));
    for table in ["prompts", "hours"] {
        if let Some(sections) = values.get(table).and_then(serde_json::Value::as_object) {
            for id in sections.keys() {
                origins
                    .sections
                    .insert(format!("{table}.{id}"), file.to_string());
            }
        }
    }
}

/// Merges one included file into `merged`: its lines after the others, its
/// prompts and hours beside them (an id defined twice is refused).
fn add(
    merged: &mut serde_json::Value,
    values: serde_json::Value,
    file: &str,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    let serde_json::Value::Object(sections) = values else {
        return Ok(());
    };
    let invalid = |key: String, problem: String, fix: String| ConfigError::Invalid {
        file: file.to_string(),
        key,
        problem,
        fix,
    };
    if let Some(key) = sections
        .keys()
        .find(|key| !INCLUDABLE.contains(&key.as_str()))
    {
        return Err(invalid(
            key.clone(),
            "is not allowed in an included file".into(),
            format!(
                "Included files hold [[lines]], [prompts.<id>] and [hours.<name>] only; move [{key}] to {}.",
                origins.main
            ),
        ));
    }
    let before = origins.clone();
    record(origins, &serde_json::Value::Object(sections.clone()), file);
    let Some(target) = merged.as_object_mut() else {
        return Ok(());
    };
    for (table, value) in sections {
        match (table.as_str(), value) {
            ("lines", serde_json::Value::Array(lines)) => {
                let entry = target
                    .entry("lines")
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                if let serde_json::Value::Array(all) = entry {
                    all.extend(lines);
                }
            }
            ("prompts" | "hours", serde_json::Value::Object(by_id)) => {
                let entry = target
                    .entry(table.clone())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                let Some(all) = entry.as_object_mut() else {
                    continue;
                };
                for (id, section) in by_id {
                    let key = format!("{table}.{id}");
                    if all.contains_key(&id) {
                        let (first, _) = before.locate(&key);
                        return Err(invalid(
                            key.clone(),
                            format!("[{key}] is also defined in {first}"),
                            "Define each prompt and each hours section once; lines in any file may use it by its id.".into(),
                        ));
                    }
                    all.insert(id, section);
                }
            }
            (_, _) => {
                return Err(invalid(
                    table.clone(),
                    "has the wrong shape".into(),
                    "Write each line as [[lines]] (two brackets) and each prompt or hours section as [prompts.<id>] or [hours.<name>].".into(),
                ));
            }
        }
    }
    Ok(())
}

/// The merged files' values as a `config` source, so that environment
/// overrides apply on top of them (kept as they are: an empty list stays one).
#[derive(Debug, Clone)]
pub struct MergedValues(
    /// The merged tree, as [`merge`] returned it.
    pub serde_json::Value,
);

impl config::Source for MergedValues {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        match to_config_value(&self.0).kind {
            config::ValueKind::Table(table) => Ok(table),
            _ => Ok(config::Map::new()),
        }
    }
}

/// One value converted as it is (`config`'s own serializer drops empty lists).
fn to_config_value(value: &serde_json::Value) -> config::Value {
    use config::ValueKind;
    use serde_json::Value;
    let kind = match value {
        Value::Null => ValueKind::Nil,
        Value::Bool(flag) => ValueKind::Boolean(*flag),
        Value::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(signed), _) => ValueKind::I64(signed),
            (None, Some(unsigned)) => ValueKind::U64(unsigned),
            (None, None) => ValueKind::Float(number.as_f64().unwrap_or_default()),
        },
        Value::String(text) => ValueKind::String(text.clone()),
        Value::Array(items) => ValueKind::Array(items.iter().map(to_config_value).collect()),
        Value::Object(table) => ValueKind::Table(
            table
                .iter()
                .map(|(key, value)| (key.clone(), to_config_value(value)))
                .collect(),
        ),
    };
    config::Value::new(None, kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(number: &str) -> serde_json::Value {
        json!({ "number": number, "court": "c", "prompt": "zh", "operator": "sip:o@192.0.2.1" })
    }

    #[test]
    fn lines_add_up_and_sections_combine_keeping_their_files() {
        let mut merged = json!({ "lines": [line("1")], "prompts": { "zh": { "file": "zh.wav" } } });
        let mut origins = Origins {
            main: "main.toml".into(),
            ..Origins::default()
        };
        record(&mut origins, &merged, "main.toml");
        let court = json!({
            "lines": [line("2"), line("3")],
            "prompts": { "greeting": { "file": "g.wav" } },
            "hours": { "office": { "zone": "Asia/Shanghai" } },
        });
        add(&mut merged, court, "conf.d/a.toml", &mut origins).unwrap();

        assert_eq!(merged["lines"].as_array().unwrap().len(), 3);
        assert_eq!(merged["prompts"].as_object().unwrap().len(), 2);
        assert_eq!(
            origins.locate("lines[2].operator[1]"),
            ("conf.d/a.toml".into(), "lines[1].operator[1]".into())
        );
        assert_eq!(
            origins.locate("lines[0].number"),
            ("main.toml".into(), "lines[0].number".into())
        );
        assert_eq!(origins.locate("prompts.greeting.file").0, "conf.d/a.toml");
        assert_eq!(origins.locate("hours.office").0, "conf.d/a.toml");
        assert_eq!(origins.locate("prompts.zh.file").0, "main.toml");
        assert_eq!(origins.locate("sip.max_calls").0, "main.toml");
    }

    #[test]
    fn a_second_definition_or_a_main_file_setting_is_refused_naming_the_files() {
        let mut merged = json!({ "prompts": { "zh": { "file": "zh.wav" } } });
        let mut origins = Origins {
            main: "main.toml".into(),
            ..Origins::default()
        };
        record(&mut origins, &merged, "main.toml");
        let twice = json!({ "prompts": { "zh": { "file": "other.wav" } } });
        let e = add(&mut merged, twice, "conf.d/b.toml", &mut origins)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("conf.d/b.toml: `prompts.zh`: [prompts.zh] is also defined in main.toml"),
            "{e}"
        );
        for (text, key) in [
            (json!({ "sip": { "max_calls": 5 } }), "`sip`"),
            (
                json!({ "lines": { "number": "1" } }),
                "`lines`: has the wrong shape",
            ),
        ] {
            let e = add(&mut merged, text, "conf.d/c.toml", &mut origins)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("conf.d/c.toml: ") && e.contains(key), "{e}");
        }
    }
}
