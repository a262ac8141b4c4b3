#!/usr/bin/env bash
# Best effort: the settlement tests also run against a real anvil where one can be installed
# (npm package @foundry-rs/anvil ships the binary); without it those tests skip with the reason.
set -u
command -v anvil >/dev/null 2>&1 && exit 0
dir="${HOME}/.cache/loranet/anvil"
[ -x "$dir/node_modules/.bin/anvil" ] && exit 0
ls "$dir"/node_modules/@foundry-rs/anvil-*/bin/anvil >/dev/null 2>&1 && exit 0
command -v npm >/dev/null 2>&1 || { echo "npm not found: the anvil settlement tests will skip" >&2; exit 0; }
echo "installing anvil for the settlement tests (npm @foundry-rs/anvil)" >&2
mkdir -p "$dir"
timeout 180 npm install --silent --no-audit --no-fund --prefix "$dir" @foundry-rs/anvil >/dev/null 2>&1 \
  || echo "could not install anvil: the anvil settlement tests will skip" >&2
exit 0
