#!/usr/bin/env bash
# Prints the Debian package's /etc/courtline/courtline.toml: config/courtline.toml
# with the installed paths (prompts and calendars under /usr/share/courtline,
# records under /var/lib/courtline), so that the service and an admin's shell
# resolve them alike, whatever the working directory. tests/packaging.rs fails
# when deploy/debian/courtline.toml is not this script's output:
#   bash deploy/debian/installed-config.sh > deploy/debian/courtline.toml
set -euo pipefail
cd "$(dirname "$0")/../.."
sed -e '1a\
#\
# Installed by the courtline Debian package as /etc/courtline/courtline.toml\
# (made from config/courtline.toml by deploy/debian/installed-config.sh):\
# prompts and holiday calendars are under /usr/share/courtline, the records\
# (database, spool, recordings, signing key) under /var/lib/courtline.\
# `courtline check` reads this file when the working directory has no\
# config/courtline.toml.' \
    -e 's#"audio/#"/usr/share/courtline/audio/#g' \
    -e 's#"config/calendars/#"/usr/share/courtline/config/calendars/#g' \
    -e 's#^database = "var/courtline.db"#database = "/var/lib/courtline/courtline.db"#' \
    -e 's#(var/spool here)#(/var/lib/courtline/spool here)#' \
    config/courtline.toml
