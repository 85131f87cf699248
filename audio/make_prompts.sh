#!/bin/sh
# Regenerates the synthetic "three rules" prompts from the scripts beside it.
# Repeatable: the same espeak-ng and sox versions give byte-identical WAVs
# (sox -R fixes the dither seed), so the recorded SHA-256 stays the same.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# cmn-latn-pinyin, not plain cmn: espeak-ng 1.51's cmn voice reads the pinyin
# of each character as English letters and tone digits ("ni three").
espeak-ng -v cmn-latn-pinyin -s 165 -f three_rules_zh.txt -w "$tmp/zh.wav"
espeak-ng -v en -s 160 -f three_rules_en.txt -w "$tmp/en.wav"

for lang in zh en; do
    # Trim the synthesiser's leading/trailing silence (courtline adds its own),
    # resample to 16 kHz mono 16-bit, normalise the peak to -3 dBFS.
    sox -R "$tmp/$lang.wav" -c 1 -b 16 "three_rules_$lang.wav" \
        silence 1 0.02 0.1% reverse silence 1 0.02 0.1% reverse \
        gain -6 rate -v 16000 gain -n -3
done
