#!/usr/bin/env bash
# Rotating backups of a directory: a real shell script for the code splitter test.
set -euo pipefail

BACKUP_ROOT="${BACKUP_ROOT:-$HOME/backups}"
KEEP="${KEEP:-7}"
LOG_FILE="${LOG_FILE:-$BACKUP_ROOT/backup.log}"

log() {
  local level="$1"
  shift
  mkdir -p "$(dirname "$LOG_FILE")"
  printf '%s [%s] %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$level" "$*" | tee -a "$LOG_FILE" >&2
}

die() {
  log ERROR "$*"
  exit 1
}

usage() {
  cat <<EOF
usage: $(basename "$0") SOURCE_DIR [NAME]

Archives SOURCE_DIR into \$BACKUP_ROOT/NAME-YYYYmmdd-HHMMSS.tar.gz and keeps the newest \$KEEP archives.
EOF
}

load_config() {
  local file="${1:-$HOME/.backuprc}"
  local key value
  [[ -f "$file" ]] || return 0
  while IFS='=' read -r key value; do
    case "$key" in
      ''|'#'*) continue ;;
      BACKUP_ROOT) BACKUP_ROOT="$value" ;;
      KEEP) KEEP="$value" ;;
      LOG_FILE) LOG_FILE="$value" ;;
      *) log WARN "ignoring unknown setting $key in $file" ;;
    esac
  done < "$file"
  [[ "$KEEP" =~ ^[0-9]+$ ]] || die "KEEP must be a number, got $KEEP"
}

check_space() {
  local source="$1"
  local needed available
  needed=$(du -sk "$source" | cut -f1)
  available=$(df -Pk "$BACKUP_ROOT" | awk 'NR == 2 { print $4 }')
  if (( needed > available )); then
    die "not enough space: need ${needed} KB, have ${available} KB in $BACKUP_ROOT"
  fi
}

make_archive() {
  local source="$1" name="$2"
  local stamp archive
  stamp=$(date '+%Y%m%d-%H%M%S')
  archive="$BACKUP_ROOT/${name}-${stamp}.tar.gz"
  tar -czf "$archive.partial" -C "$(dirname "$source")" "$(basename "$source")"
  mv "$archive.partial" "$archive"
  log INFO "wrote $archive ($(du -h "$archive" | cut -f1))"
  echo "$archive"
}

verify_archive() {
  local archive="$1"
  if ! tar -tzf "$archive" > /dev/null; then
    rm -f "$archive"
    die "archive $archive is corrupt; removed it"
  fi
}

rotate() {
  local name="$1"
  local old
  mapfile -t old < <(ls -1t "$BACKUP_ROOT/${name}"-*.tar.gz 2>/dev/null | tail -n +"$((KEEP + 1))")
  for archive in "${old[@]}"; do
    rm -f -- "$archive"
    log INFO "rotated out $archive"
  done
}

list_backups() {
  local name="$1"
  local archive
  for archive in "$BACKUP_ROOT/${name}"-*.tar.gz; do
    [[ -e "$archive" ]] || continue
    printf '%s\t%s\n' "$(du -h "$archive" | cut -f1)" "$(basename "$archive")"
  done
}

restore() {
  local archive="$1" target="$2"
  [[ -f "$archive" ]] || die "no such archive: $archive"
  if [[ -e "$target" && -n "$(ls -A "$target" 2>/dev/null)" ]]; then
    die "$target is not empty; restore into an empty directory"
  fi
  mkdir -p "$target"
  tar -xzf "$archive" -C "$target"
  log INFO "restored $archive into $target"
}

main() {
  if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    usage
    exit 2
  fi
  local source="$1"
  local name="${2:-$(basename "$source")}"
  load_config
  [[ -d "$source" ]] || die "$source is not a directory"
  mkdir -p "$BACKUP_ROOT"
  check_space "$source"
  local archive
  archive=$(make_archive "$source" "$name")
  verify_archive "$archive"
  rotate "$name"
  log INFO "backup of $source done"
}

main "$@"
