#!/bin/sh
# Builds the Go example offline, from Debian's Go packages (make go-example installs
# them): golang-go, golang-google-grpc-dev, golang-google-protobuf-dev,
# golang-google-genproto-dev, protoc-gen-go, protoc-gen-go-grpc.
#
#   examples/go/build.sh [OUTPUT]     (default examples/go/metalearn-go)
#
# `buf generate` (this directory's buf.gen.yaml, the plugins on PATH) writes the code
# into a scratch GOPATH beside a copy of main.go, and `go build` runs in GOPATH mode over
# /usr/share/gocode, where Debian puts its Go sources: nothing is downloaded. With
# internet instead: `buf generate && go mod tidy && go build` in this directory.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
output=$(realpath -m "${1:-$here/metalearn-go}")
buf=${BUF:-$(command -v buf || echo "$here/../../.venv/bin/buf")}
gopath=$(mktemp -d)
trap 'chmod -R u+w "$gopath"; rm -rf "$gopath"' EXIT

# The import path of main.go and of the generated packages (go.mod, buf.gen.yaml).
package="$gopath/src/metalearn.dev/examples/go"
mkdir -p "$package"
cp "$here/main.go" "$package/"
(cd "$here" && "$buf" generate --output "$package")
cd "$package"
GOPATH="$gopath:/usr/share/gocode" GO111MODULE=off GOPROXY=off GOFLAGS= \
    go build -o "$output" .
echo "built $output"
