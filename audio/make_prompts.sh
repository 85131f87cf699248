#!/bin/sh
# Regenerates the synthetic prompts from the scripts beside them, and each
# court's greeting (greetings/<court>.wav) from greetings/<court>.txt.
# Repeatable: the same espeak-ng and sox versions give byte-identical WAVs
# (sox -R fixes the dither seed), so the recorded SHA-256 stays the same.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# make_prompt NAME VOICE SPEED: NAME.txt spoken into NAME.wav.
make_prompt() {
    espeak-ng -v "$2" -s "$3" -f "$1.txt" -w "$tmp/speech.wav"
    # Trim the synthesiser's leading/trailing silence (courtline adds its own),
    # resample to 16 kHz mono 16-bit, normalise the peak to -3 dBFS.
    sox -R "$tmp/speech.wav" -c 1 -b 16 "$1.wav" \
        silence 1 0.02 0.1% reverse silence 1 0.02 0.1% reverse \
        gain -6 rate -v 16000 gain -n -3
}

# name, espeak-ng voice, words per minute. cmn-latn-pinyin, not plain cmn:
# espeak-ng 1.51's cmn voice reads the pinyin of each character as English
# letters and tone digits ("ni three").
while read -r name voice speed; do
    make_prompt "$name" "$voice" "$speed"
done <<PROMPTS
three_rules_zh cmn-latn-pinyin 165
three_rules_en en 160
after_hours_zh cmn-latn-pinyin 165
busy_zh cmn-latn-pinyin 165
PROMPTS

# One greeting per court ("您好！欢迎致电上海市黄浦区人民法院。"), in the
# same voice as the Mandarin warning it is played before.
for script in greetings/*.txt; do
    make_prompt "${script%.txt}" cmn-latn-pinyin 165
done
