#!/usr/bin/env bash
# Puts the tiny-Shakespeare corpus at data/tinyshakespeare.txt: copied from ../shared/data when
# that exists beside the repository, downloaded from the public char-rnn location otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/tinyshakespeare.txt"
sha=86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed
url=https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt
shared="$here/../../shared/data/tinyshakespeare.txt"

ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha" ]; }

ok "$dest" && exit 0
tmp="$dest.tmp.$$"
trap 'rm -f "$tmp"' EXIT
if [ -f "$shared" ]; then
  cp "$shared" "$tmp"
else
  echo "data/fetch.sh: downloading $url" >&2
  curl -fsSL --retry 3 -o "$tmp" "$url" || wget -q -O "$tmp" "$url"
fi
if ! ok "$tmp"; then
  echo "data/fetch.sh: sha256 of the corpus is not $sha" >&2
  exit 1
fi
mv "$tmp" "$dest"
echo "data/fetch.sh: $dest ready" >&2
