#!/bin/bash
# Copies into ROOT the programs the controller runs, the shared libraries and data they load, and
# nothing else: the image's root file system is built from it FROM scratch (deploy/Dockerfile).
# Run inside a Debian system where those programs are installed from Debian's packages, on the
# image's own architecture (ldd runs the target's dynamic loader).
#
#   image-rootfs.sh ROOT
#
# What lands in ROOT:
#   - node, nft, iptables and ip6tables (both variants: xtables-{legacy,nft}-multi, their
#     iptables-* names and their dlopen()ed extensions), ip and conntrack; with every library that
#     ldd lists for them, and each symbolic link on the way to a file (merged /usr included);
#   - BusyBox as /bin/sh and the usual commands, for `kubectl exec` and the image's tests: about
#     1 MiB against tens for bash, coreutils, findutils, grep and sed. Programs the image ships
#     keep their names (BusyBox's own `ip` is not installed);
#   - the data those programs read: OpenSSL's configuration, /etc/protocols, /etc/services,
#     /etc/ethertypes, iproute2's tables; a root user and group; the loader's cache;
#   - for each Debian package a file came from, its copyright file and its status entry in
#     /var/lib/dpkg/status.d/ (as distroless images keep them), so that scanners see exactly the
#     packages present and their versions.
# What does not: apt, dpkg, perl, bash, coreutils, documentation, locales, glibc's gconv modules:
# the controller runs none of them.
set -euo pipefail
shopt -s nullglob

root="${1:?usage: image-rootfs.sh ROOT}"
mkdir -p "${root}"
root="$(readlink -f "${root}")"

# Copies path $1 into the root as it is here: each symbolic link on the way to the file, then the
# file itself, in directories resolved to their real location (merged /usr: /lib is usr/lib).
copy_path() {
  local path="$1" dir target
  while :; do
    dir="$(readlink -f "${path%/*}/")"
    path="${dir%/}/${path##*/}"
    if [[ ! -e "${root}${path}" && ! -L "${root}${path}" ]]; then
      cp -a --parents "${path}" "${root}/"
    fi
    [[ -L "${path}" ]] || return 0
    target="$(readlink "${path}")"
    if [[ "${target}" == /* ]]; then path="${target}"; else path="${dir%/}/${target}"; fi
  done
}

# The libraries ELF files load, and the dynamic loader, as ldd lists them: each once. (One ldd
# for all files: under emulation every process start is slow.)
libraries_of() {
  ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' |
    sort -u
}

# Merged /usr: the top-level links (/bin → usr/bin, …) as this system has them.
for link in /bin /sbin /lib /lib32 /lib64 /libx32; do
  if [[ -L "${link}" ]]; then cp -a "${link}" "${root}/"; fi
done

programs=(node nft xtables-legacy-multi xtables-nft-multi ip conntrack busybox)
elf_files=()
for program in "${programs[@]}"; do
  path="$(command -v "${program}")" || {
    echo "image-rootfs: ${program} is not installed" >&2
    exit 1
  }
  copy_path "${path}"
  elf_files+=("$(readlink -f "${path}")")
done
# The names iptables is called by (iptables-nft-restore, ip6tables-legacy-save, …) are links to
# the two multi-call programs; Debian's alternatives choose what plain `iptables` means.
for link in /usr/sbin/iptables* /usr/sbin/ip6tables* /usr/sbin/xtables-* /etc/alternatives/ip*tables*; do
  copy_path "${link}"
done
# iptables loads its matches and targets (tcp, addrtype, DNAT, MARK, …) with dlopen().
xtables_dir="$(dirname "$(readlink -f "$(ldd "$(command -v xtables-nft-multi)" |
  awk '$1 ~ /^libxtables/ { print $3 }')")")/xtables"
[[ -d "${xtables_dir}" ]] || {
  echo "image-rootfs: no iptables extensions in ${xtables_dir}" >&2
  exit 1
}
for extension in "${xtables_dir}"/*.so; do
  copy_path "${extension}"
  elf_files+=("${extension}")
done

while read -r library; do copy_path "${library}"; done < <(libraries_of "${elf_files[@]}")

# Debian's Node.js reads some of its own JavaScript (undici, acorn, cjs-module-lexer, …) from the
# packages that ship it, at every start: the paths are compiled into libnode.
libnode="$(ldd "$(command -v node)" | awk '$1 ~ /^libnode/ { print $3 }')"
while read -r builtin; do
  if [[ -e "${builtin}" ]]; then copy_path "${builtin}"; fi
done < <(grep -a -o '/usr/share/nodejs/[A-Za-z0-9_./-]*\.js' "${libnode}" | sort -u)

for data in /etc/ssl/openssl.cnf /usr/lib/ssl/openssl.cnf /etc/ssl/openssl.cnf.d \
  /etc/protocols /etc/services /etc/ethertypes /etc/iproute2 /usr/share/iproute2 \
  /etc/nsswitch.conf /etc/host.conf /etc/ld.so.conf /etc/ld.so.conf.d; do
  if [[ -e "${data}" || -L "${data}" ]]; then copy_path "${data}"; fi
done

# BusyBox's commands, where the image has no program of that name; not its package managers
# (dpkg, rpm, …): the image has no package database they could keep.
busybox="$(readlink -f "$(command -v busybox)")"
while read -r applet; do
  name="${applet##*/}"
  case "${name}" in dpkg | dpkg-deb | rpm | rpm2cpio) continue ;; esac
  if [[ ! -e "${root}/usr/bin/${name}" && ! -L "${root}/usr/bin/${name}" &&
    ! -e "${root}/usr/sbin/${name}" && ! -L "${root}/usr/sbin/${name}" ]]; then
    case "${applet}" in
      *sbin/*) ln -s "${busybox}" "${root}/usr/sbin/${name}" ;;
      *) ln -s "${busybox}" "${root}/usr/bin/${name}" ;;
    esac
  fi
done < <("${busybox}" --list-full)

mkdir -p "${root}/etc" "${root}/run" "${root}/var" "${root}/root"
mkdir -m 1777 -p "${root}/tmp"
ln -sfn /run "${root}/var/run"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' \
  >"${root}/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"${root}/etc/group"
ldconfig -r "${root}"

# The Debian packages the copied files came from: each one's copyright and status entry.
# Regular files only: a link such as BusyBox's /usr/bin/ls has the path of another package's file.
mapfile -t files < <(cd "${root}" && find . -type f -printf '/%P\n')
mkdir -p "${root}/var/lib/dpkg/status.d"
# dpkg -S prints "package[:arch][, package…]: path" (and "diversion by …" lines, left out); a
# file no package owns (the loader's cache, the files written above) is left out.
while read -r package; do
  dpkg-query --status "${package}" >"${root}/var/lib/dpkg/status.d/${package%%:*}"
  copyright="/usr/share/doc/${package%%:*}/copyright"
  if [[ -e "${copyright}" ]]; then copy_path "${copyright}"; fi
done < <(dpkg --search "${files[@]}" 2>/dev/null | grep -E '^[^ ]+(, [^ ]+)*: /' |
  sed 's/: .*//' | tr ',' '\n' | tr -d ' ' | sort -u)
