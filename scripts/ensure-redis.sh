#!/usr/bin/env bash
# The devnet and the tests start their own redis-server; make sure the binary exists.
set -eu
command -v redis-server >/dev/null 2>&1 && exit 0
echo "redis-server not found; trying to install it" >&2
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null && exit 0
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null && exit 0
elif command -v brew >/dev/null 2>&1; then
  brew install redis && exit 0
fi
echo "could not install redis-server: install it with your package manager (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) and run again" >&2
exit 1
