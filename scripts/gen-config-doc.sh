#!/usr/bin/env bash
# Regenerates the command reference at the end of docs/configuration.md from --help.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o /tmp/flashpipe-doc ./cmd/flashpipe
head=$(sed '/^## flashpipe /,$d' docs/configuration.md)
{
  printf '%s\n\n' "$head"
  for c in processor sequencer sink api run dev submit retry reprocess replay prune export status "cache stats" "cache clear" "cap show" "cap set" "deadletters list" "deadletters replay" "streams show" "streams apply" "streams permissions" migrate simulate-api bench healthcheck; do
    printf '## flashpipe %s\n\n```\n' "$c"
    # shellcheck disable=SC2086
    /tmp/flashpipe-doc $c --help 2>&1 | sed -n '/^Flags:/,$p' | grep -v "Show context-sensitive help"
    printf '```\n\n'
  done
} > docs/configuration.md.new
mv docs/configuration.md.new docs/configuration.md
