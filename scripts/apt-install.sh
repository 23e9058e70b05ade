#!/usr/bin/env bash
# apt-install.sh COMMAND PACKAGE WHY: make sure COMMAND exists, installing Debian's PACKAGE when we can
# (root with apt-get); otherwise say what is missing and why, and carry on (what needs it will say so).
set -euo pipefail
command="$1" package="$2" why="$3"
if command -v "$command" >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing $package ($why)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null; }
else
    echo "bootstrap: $command is missing; $why needs it: sudo apt-get install $package" >&2
fi
