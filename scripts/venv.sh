# Sourced by the scripts that install Python tools from PyPI into a cached venv.
#
#   ensure_venv VENV FIND_PYTHON PIN...
#
# makes VENV hold exactly these pins, once: a marker file in it records what was installed, and
# other pins (a version raised in a script) rebuild it. FIND_PYTHON is a command that prints the
# interpreter to build it with, run only when the venv is (re)built. Messages go to stderr.

ensure_venv() {
  local venv="$1" find="$2"
  shift 2
  local marker="$venv/.ferry-installed" want="$*"
  if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]]; then return 0; fi
  local python
  python="$($find)" || return 1
  echo "installing $want into $venv (with $python)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
  echo "$want" > "$marker"
}

# The default interpreter, for tools that run on any Python 3.
system_python() { command -v python3; }
