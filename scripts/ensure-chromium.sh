#!/usr/bin/env bash
# The web app's browser tests drive Debian's chromium through playwright (executable_path); playwright's
# own browser download is never used. Install chromium where we can; the tests skip, saying why, where not.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
echo "chromium not found; trying to install Debian's chromium package for the web app's browser tests" >&2
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; } && exit 0
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 && exit 0
fi
echo "could not install chromium: the browser tests will be skipped (Debian/Ubuntu: apt-get install chromium)" >&2
exit 0
