# Installs what a script needs from Debian when it is missing (sourced, not run).
#   need COMMAND [apt-get install arguments: packages, options]
# Installs when COMMAND is not on the PATH, then fails clearly if it still is not.

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need() {
  local cmd=$1
  shift
  if ! command -v "$cmd" >/dev/null 2>&1; then
    echo "$(basename "$0"): $cmd is missing; installing from Debian: $*"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq "$@" >/dev/null
  fi
  command -v "$cmd" >/dev/null 2>&1 || { echo "$(basename "$0"): $cmd still missing after installing $*" >&2; exit 1; }
}

# Installs a Python tool from PyPI when its module is missing.
#   need_py MODULE PACKAGE==VERSION
need_py() {
  local module=$1 package=$2
  if ! python3 -c "import $module" >/dev/null 2>&1; then
    echo "$(basename "$0"): python module $module is missing; installing from PyPI: $package"
    python3 -m pip install -q --disable-pip-version-check "$package"
  fi
  python3 -c "import $module" >/dev/null 2>&1 || { echo "$(basename "$0"): $module still missing after installing $package" >&2; exit 1; }
}
