#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine, for development and for the tests that need a
# real kubelet: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kube-proxy (nftables mode) of one release, built by `scripts/envtest-build.sh --node`, with
# containerd, runc and the CNI plugins (bridge, host-local, loopback, portmap) from Debian.
#
#   bash scripts/cluster.sh up                 start what is not running; the last line of stdout
#                                              is the path of an admin kubeconfig
#   bash scripts/cluster.sh down               stop everything and remove every trace
#   bash scripts/cluster.sh status             what runs; exit 0 when all of it, 3 when nothing
#   bash scripts/cluster.sh restart COMPONENT  e.g. kube-proxy, as a DaemonSet rollout would
#   bash scripts/cluster.sh exec CMD [ARG...]  run CMD on the node (its network and mount view)
#   bash scripts/cluster.sh registry add|remove 127.0.0.1:PORT
#                                              let the node pull from a registry that listens
#                                              on the machine's loopback (plain HTTP), or stop
#
# Needs root and cgroup v1 (the machines it was made on have no other). Safe to run `up` again:
# it starts only what is missing, and re-imports an image only when it changed.
#
# Isolation: the whole node lives in a network namespace of its own ("the node"), with a veth to
# a second one that plays the network outside it ("the LAN"), and in one private mount namespace
# shared by all its programs (held by a long-lived process), so that the machine's own
# interfaces, routes, firewall rules, sysctls and mounts never change. From the machine, the API
# server is reached through a relay on the machine's 127.0.0.1 (a port chosen at `up`), the
# node's programs through `cluster.sh exec`. Every process of the node runs in one cgroup
# subtree, so `down` finds them all, pods included.
#
# The images: `up` builds and imports into containerd's k8s.io namespace
#   ipvs-node-controller-pause:local     the pod sandbox, a static program on an empty root
#   ipvs-node-controller-workload:local  the same program as an HTTP server and client for test
#                                        pods (`workload serve|get|loop`, scripts/cluster/workload)
#   ipvs-node-controller:<version>       our image, from scripts/image.sh, under the reference
#                                        the manifests use, so `kubectl apply -f
#                                        deploy/ipvs-node-controller.yaml` works unchanged
# Any other image comes from a registry on the machine's loopback, once `registry add` made it
# reachable: containerd then pulls as a node pulls in production (an image index resolved to
# the node's architecture, layers checked against their digests).
#
# Environment:
#   CLUSTER_STATE_DIR  where the node keeps its state (default /var/tmp/ipvs-node-controller-cluster);
#                      `down` removes it
set -euo pipefail

readonly SCRIPT_NAME=cluster
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly repo_root
# shellcheck source=lib/common.sh
source "${repo_root}/scripts/lib/common.sh"

readonly STATE_DIR="${CLUSTER_STATE_DIR:-/var/tmp/ipvs-node-controller-cluster}"
readonly NODE_NAME=node-1
readonly NODE_NS=ipvsnc-node
readonly LAN_NS=ipvsnc-lan
# The LAN between the node and the rest of the network (documentation range).
readonly NODE_IP=198.51.100.2
readonly LAN_IP=198.51.100.1
readonly LAN_PREFIX=24
readonly CLUSTER_CIDR=10.244.0.0/16
readonly SERVICE_CIDR=10.96.0.0/16
# The `kubernetes` Service's cluster IP: the first address of SERVICE_CIDR.
readonly API_SERVICE_IP=10.96.0.1
readonly API_PORT=6443
# The subtree of every cgroup hierarchy that holds the node's processes: its daemons in
# <root>/system, its pods in <root>/kubepods (the kubelet's cgroupRoot).
readonly CGROUP_NAME=ipvs-node-controller-cluster
# containerd's default. Where the state directory's file system cannot hold overlay mounts,
# "native" works anywhere, at the price of a full copy of every layer (1.2 GB for our image and
# the pause image).
readonly SNAPSHOTTER=overlayfs
readonly PAUSE_IMAGE=ipvs-node-controller-pause:local
readonly WORKLOAD_IMAGE=ipvs-node-controller-workload:local
readonly CACHE_ROOT="${XDG_CACHE_HOME:-${HOME}/.cache}/ipvs-node-controller/cluster"
# The order in which `up` starts them; `down` and `status` use it too.
readonly COMPONENTS=(mounts etcd kube-apiserver kube-controller-manager kube-scheduler containerd
  kubelet kube-proxy api-relay-node api-relay-host)

readonly PKI="${STATE_DIR}/pki"
readonly ETC="${STATE_DIR}/etc"
readonly LOGS="${STATE_DIR}/logs"
readonly PIDS="${STATE_DIR}/pids"
readonly ADMIN_KUBECONFIG="${STATE_DIR}/admin.kubeconfig"
readonly CONTAINERD_SOCKET="${STATE_DIR}/containerd/containerd.sock"
readonly API_RELAY_SOCKET="${STATE_DIR}/api.sock"
# containerd's per-registry configuration (hosts.toml), read again at every pull.
readonly REGISTRY_HOSTS_DIR="${STATE_DIR}/containerd/certs.d"

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# One command at a time changes the node: held on descriptor 8 until the script exits (the
# daemons it launches close that descriptor).
lock_state() {
  exec 8>"${STATE_DIR}/.lock"
  flock 8
}

require_root() {
  [[ "$(id -u)" == 0 ]] || die "needs root (network namespaces, cgroups, mounts)"
}

# --- cgroups -------------------------------------------------------------------------------

# The mount points of every cgroup hierarchy: each v1 controller, the named systemd one and, on a
# hybrid machine, the unified one (runc puts containers there too).
cgroup_mounts() {
  findmnt -rn -t cgroup,cgroup2 -o TARGET
}

cgroups_v1() {
  findmnt -rn -t cgroup -o TARGET | grep -q .
}

create_cgroups() {
  local mount dir
  while IFS= read -r mount; do
    for dir in "${mount}/${CGROUP_NAME}" "${mount}/${CGROUP_NAME}/system"; do
      [[ -d "${dir}" ]] || mkdir "${dir}"
      # A new cpuset cgroup has no CPUs and no memory nodes: no process could join it. The
      # kubelet fills in its own children, not the root it is given.
      if [[ -f "${dir}/cpuset.cpus" && -z "$(cat "${dir}/cpuset.cpus")" ]]; then
        cat "$(dirname "${dir}")/cpuset.cpus" >"${dir}/cpuset.cpus"
        cat "$(dirname "${dir}")/cpuset.mems" >"${dir}/cpuset.mems"
      fi
    done
  done < <(cgroup_mounts)
}

# Every pid in the node's cgroup subtree.
cgroup_pids() {
  local mount
  while IFS= read -r mount; do
    [[ -d "${mount}/${CGROUP_NAME}" ]] || continue
    find "${mount}/${CGROUP_NAME}" -name cgroup.procs -exec cat {} + 2>/dev/null || true
  done < <(cgroup_mounts) | sort -un
}

# Kills every process of the node (SIGKILL: daemons, shims and containers alike), then removes
# the cgroups, deepest first.
remove_cgroups() {
  local freezer pids mount
  freezer="$(findmnt -rn -t cgroup -O freezer -o TARGET | head -n 1)"
  for _ in $(seq 1 50); do
    pids="$(cgroup_pids)"
    [[ -n "${pids}" ]] || break
    # Frozen, nothing can fork between the listing and the kill.
    if [[ -n "${freezer}" && -d "${freezer}/${CGROUP_NAME}" ]]; then
      echo FROZEN >"${freezer}/${CGROUP_NAME}/freezer.state" 2>/dev/null || true
    fi
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL ${pids} 2>/dev/null || true
    if [[ -n "${freezer}" && -d "${freezer}/${CGROUP_NAME}" ]]; then
      echo THAWED >"${freezer}/${CGROUP_NAME}/freezer.state" 2>/dev/null || true
    fi
    sleep 0.2
  done
  [[ -z "$(cgroup_pids)" ]] || die "processes survive in the node's cgroups: $(cgroup_pids | paste -sd ' ')"
  while IFS= read -r mount; do
    [[ -d "${mount}/${CGROUP_NAME}" ]] || continue
    for _ in $(seq 1 50); do
      find "${mount}/${CGROUP_NAME}" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d "${mount}/${CGROUP_NAME}" ]] || break
      sleep 0.2
    done
    [[ ! -d "${mount}/${CGROUP_NAME}" ]] || die "cannot remove ${mount}/${CGROUP_NAME}"
  done < <(cgroup_mounts)
}

# --- processes ------------------------------------------------------------------------------

pid_of() {
  local file="${PIDS}/$1"
  [[ -f "${file}" ]] || return 1
  local pid
  pid="$(cat "${file}")"
  [[ -n "${pid}" && -d "/proc/${pid}" ]] || return 1
  # A recycled pid belongs to a process outside the node's cgroups.
  grep -q ":/${CGROUP_NAME}/" "/proc/${pid}/cgroup" 2>/dev/null || return 1
  printf '%s\n' "${pid}"
}

running() { pid_of "$1" >/dev/null; }

# launch NAME WHERE CMD...: starts CMD in the background as component NAME, in the node's
# daemon cgroups, logging to logs/NAME.log. WHERE is "node" (the node's network and mount
# namespaces), "node-network" (its network namespace only) or "machine" (neither: the relay that
# the machine's 127.0.0.1 reaches).
launch() {
  local name="$1" where="$2" procs=() mount
  shift 2
  while IFS= read -r mount; do procs+=("${mount}/${CGROUP_NAME}/system/cgroup.procs"); done < <(cgroup_mounts)
  local enter=()
  case "${where}" in
    node) enter=(nsenter "--mount=/proc/$(pid_of mounts)/ns/mnt" "--net=/run/netns/${NODE_NS}" --) ;;
    node-network) enter=(nsenter "--net=/run/netns/${NODE_NS}" --) ;;
    machine) ;;
    *) die "launch: unknown place ${where}" ;;
  esac
  printf '%s %s\n' "$(date -u +%FT%TZ)" "--- start: $*" >>"${LOGS}/${name}.log"
  # setsid: the daemon outlives this script and its terminal. The shell joins the cgroups, then
  # execs the program (nsenter execs it too), so the recorded pid is the program's own.
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'for f in "${@:2:$1}"; do echo $$ >"$f"; done; shift "$(($1 + 1))"; exec "$@"' \
    _ "${#procs[@]}" "${procs[@]}" "${enter[@]}" "$@" \
    </dev/null >>"${LOGS}/${name}.log" 2>&1 8>&- &
  local pid=$!
  printf '%s\n' "${pid}" >"${PIDS}/${name}"
  # Until the shell has joined the cgroups, pid_of would not recognise the process.
  for _ in $(seq 1 100); do
    grep -q ":/${CGROUP_NAME}/" "/proc/${pid}/cgroup" 2>/dev/null && return 0
    [[ -d "/proc/${pid}" ]] || break
    sleep 0.05
  done
  tail -n 20 "${LOGS}/${name}.log" >&2 || true
  die "${name} did not start"
}

stop_component() {
  local name="$1" pid
  pid="$(pid_of "${name}")" || return 0
  kill -TERM "${pid}" 2>/dev/null || true
  for _ in $(seq 1 100); do
    [[ -d "/proc/${pid}" ]] || break
    sleep 0.1
  done
  kill -KILL "${pid}" 2>/dev/null || true
  rm -f "${PIDS}/${name}"
}

# wait_for WHAT SECONDS COMPONENT CMD...: polls CMD until it succeeds; fails early with the
# component's log when that component has exited.
wait_for() {
  local what="$1" seconds="$2" component="$3" deadline
  shift 3
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "${component}" ]] && ! running "${component}"; then
      tail -n 30 "${LOGS}/${component}.log" >&2 || true
      die "${component} exited while waiting until ${what}"
    fi
    if ((SECONDS >= deadline)); then
      [[ -z "${component}" ]] || tail -n 30 "${LOGS}/${component}.log" >&2 || true
      die "timed out after ${seconds} s waiting until ${what}"
    fi
    sleep 0.5
  done
}

# Runs a command on the node, as its programs see the world.
on_node() {
  nsenter "--mount=/proc/$(pid_of mounts)/ns/mnt" "--net=/run/netns/${NODE_NS}" -- "$@"
}

in_node_net() { ip netns exec "${NODE_NS}" "$@"; }

# kubectl keeps its discovery cache in the node's state, not in the home directory.
kubectl_admin() {
  "${ASSETS}/kubectl" --kubeconfig="${ADMIN_KUBECONFIG}" --cache-dir="${STATE_DIR}/kube-cache" "$@"
}

# --- preparation ----------------------------------------------------------------------------

ensure_packages() {
  local missing=()
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v socat >/dev/null 2>&1 || missing+=(socat)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  ((${#missing[@]} == 0)) && return 0
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Another installation may hold dpkg's lock for a while (an image build installing Docker).
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The static program of the cluster's own images, built once per version of its source; sets
# WORKLOAD_BINARY and WORKLOAD_HASH.
build_workload() {
  local source="${repo_root}/scripts/cluster/workload" dir
  WORKLOAD_HASH="$(cat "${source}/go.mod" "${source}/main.go" | sha256sum | cut -c1-16)"
  dir="${CACHE_ROOT}/workload-${WORKLOAD_HASH}"
  WORKLOAD_BINARY="${dir}/workload"
  [[ -x "${WORKLOAD_BINARY}" ]] && return 0
  command -v go >/dev/null 2>&1 || die "go is not on PATH; it builds the cluster's pause and test images"
  log "building the pause and workload program"
  mkdir -p "${dir}"
  GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go build -C "${repo_root}/scripts/cluster/workload" -trimpath -ldflags "-s -w" \
    -o "${WORKLOAD_BINARY}.new" .
  mv "${WORKLOAD_BINARY}.new" "${WORKLOAD_BINARY}"
}

# single_file_image REFERENCE NAME: the program alone on an empty root, as /NAME, its entrypoint
# (what `FROM scratch` + `COPY` would make). Made again only when the program changed.
single_file_image() {
  local reference="$1" name="$2" dir
  [[ "$(docker image inspect --format '{{index .Config.Labels "source"}}' "${reference}" 2>/dev/null)" == \
    "${WORKLOAD_HASH}" ]] && return 0
  dir="$(mktemp -d)"
  cp "${WORKLOAD_BINARY}" "${dir}/${name}"
  tar -C "${dir}" --owner=0 --group=0 --numeric-owner -c "${name}" |
    docker import --change "ENTRYPOINT [\"/${name}\"]" --change "LABEL source=${WORKLOAD_HASH}" \
      - "${reference}" >/dev/null
  rm -rf "${dir}"
}

# Builds the three images in the machine's Docker Engine (scripts/image.sh starts one if none
# answers); sets CONTROLLER_IMAGE.
build_images() {
  build_workload
  CONTROLLER_IMAGE="$(bash "${repo_root}/scripts/image.sh" | tail -n 1)"
  single_file_image "${PAUSE_IMAGE}" pause
  single_file_image "${WORKLOAD_IMAGE}" workload
}

ctr_node() {
  ctr --address "${CONTAINERD_SOCKET}" --namespace k8s.io "$@"
}

# import_image REFERENCE: copies a Docker image into the node's containerd, in the k8s.io
# namespace where the kubelet looks for images, under the same reference; skipped when that very
# image was imported before.
import_image() {
  local reference="$1" id marker tar
  id="$(docker image inspect --format '{{.Id}}' "${reference}")"
  marker="${STATE_DIR}/images/$(printf '%s' "${reference}" | tr '/:' '__')"
  [[ -f "${marker}" && "$(cat "${marker}")" == "${id}" ]] && return 0
  log "importing ${reference} into the node's containerd"
  mkdir -p "${STATE_DIR}/images"
  tar="${STATE_DIR}/images/import.tar"
  docker save "${reference}" -o "${tar}"
  # Unpacked for the snapshotter the kubelet's containers use, not ctr's default.
  ctr_node images import --snapshotter "${SNAPSHOTTER}" "${tar}" >/dev/null
  rm -f "${tar}"
  printf '%s\n' "${id}" >"${marker}"
}

# Certificates (one CA), the service-account key and a static token per identity.
write_pki() {
  [[ -f "${PKI}/tokens.csv" ]] && return 0
  mkdir -p "${PKI}"
  (
    cd "${PKI}"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=${CGROUP_NAME}-ca" 2>/dev/null
    # The API server's name from the machine (127.0.0.1 through the relay), from the node (its
    # IP) and from pods (the kubernetes Service).
    openssl req -x509 -CA ca.crt -CAkey ca.key -newkey rsa:2048 -nodes -days 3650 \
      -keyout apiserver.key -out apiserver.crt -subj /CN=kube-apiserver \
      -addext "subjectAltName=IP:127.0.0.1,IP:${NODE_IP},IP:${API_SERVICE_IP},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
      -addext extendedKeyUsage=serverAuth 2>/dev/null
    # What the API server shows the kubelet (logs, exec): a client certificate the kubelet's
    # x509 authentication accepts, in the group that its authorization webhook lets through.
    openssl req -x509 -CA ca.crt -CAkey ca.key -newkey rsa:2048 -nodes -days 3650 \
      -keyout kubelet-client.key -out kubelet-client.crt \
      -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
      -addext extendedKeyUsage=clientAuth 2>/dev/null
    openssl genrsa -out service-account.key 2048 2>/dev/null
    local identity token
    # Each program with the identity its built-in RBAC role is bound to.
    for identity in \
      'admin,admin,"system:masters"' \
      "system:node:${NODE_NAME},kubelet,\"system:nodes\"" \
      'system:kube-controller-manager,kube-controller-manager' \
      'system:kube-scheduler,kube-scheduler' \
      'system:kube-proxy,kube-proxy'; do
      token="$(openssl rand -hex 24)"
      printf '%s,%s\n' "${token}" "${identity}" >>tokens.csv.new
    done
    chmod 600 ./*.key tokens.csv.new
    mv tokens.csv.new tokens.csv
  )
}

# kubeconfig FILE SERVER UID: a kubeconfig with the token of the identity whose uid is UID.
write_kubeconfig() {
  local file="$1" server="$2" uid="$3" token
  token="$(awk -F, -v uid="${uid}" '$3 == uid { print $1 }' "${PKI}/tokens.csv")"
  [[ -n "${token}" ]] || die "no token for ${uid}"
  # JSON, which is YAML too, so that programs without a YAML parser read it.
  cat >"${file}.new" <<JSON
{
  "apiVersion": "v1",
  "kind": "Config",
  "clusters": [
    { "name": "local", "cluster": { "server": "${server}", "certificate-authority": "${PKI}/ca.crt" } }
  ],
  "users": [{ "name": "${uid}", "user": { "token": "${token}" } }],
  "contexts": [{ "name": "local", "context": { "cluster": "local", "user": "${uid}" } }],
  "current-context": "local"
}
JSON
  chmod 600 "${file}.new"
  mv "${file}.new" "${file}"
}

write_configs() {
  mkdir -p "${ETC}" "${LOGS}" "${PIDS}" "${STATE_DIR}/cni/net.d" "${STATE_DIR}/containerd" \
    "${STATE_DIR}/var-log" "${STATE_DIR}/var-lib-cni" "${STATE_DIR}/sysctl"
  local uid
  for uid in kubelet kube-controller-manager kube-scheduler kube-proxy admin; do
    write_kubeconfig "${ETC}/${uid}.kubeconfig" "https://127.0.0.1:${API_PORT}" "${uid}"
  done
  # Pods get the machine's resolvers (there is no cluster DNS); a copy, because the node's /run
  # is its own (a resolv.conf that links into /run would be empty there).
  cp -L /etc/resolv.conf "${ETC}/resolv.conf"

  cat >"${ETC}/containerd.toml" <<TOML
version = 2
root = "${STATE_DIR}/containerd/root"
# In the node's own /run (see start_mounts).
state = "/run/containerd"

[grpc]
  # On disk rather than in /run, so that ctr on the machine reaches it to import images.
  address = "${CONTAINERD_SOCKET}"

[plugins."io.containerd.internal.v1.opt"]
  # Default /opt/containerd, on the machine.
  path = "${STATE_DIR}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # Built here: no registry can be pulled from.
  sandbox_image = "${PAUSE_IMAGE}"
  # The kubelet asks for negative oom_score_adj values (-997 for critical pods); lowering one
  # needs CAP_SYS_RESOURCE, which these machines drop from every process's bounding set, and runc
  # then fails to start the container ("can't get final child's PID from pipe: EOF"). With this,
  # containerd raises such values to its own.
  restrict_oom_score_adj = true
  enable_selinux = false
  # kubectl exec/logs/port-forward streams, reached by the kubelet on the node's loopback.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "${SNAPSHOTTER}"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroupfs like the kubelet (cgroupDriver): no systemd manages this node.
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".registry]
    # `registry add` writes a directory per registry here.
    config_path = "${REGISTRY_HOSTS_DIR}"

  [plugins."io.containerd.grpc.v1.cri".cni]
    # Debian's containernetworking-plugins.
    bin_dir = "/usr/lib/cni"
    conf_dir = "${STATE_DIR}/cni/net.d"
TOML

  cat >"${ETC}/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1: deprecated by Kubernetes, and the only cgroup version of these machines.
failCgroupV1: false
cgroupDriver: cgroupfs
# Created by cluster.sh in every hierarchy (with its CPUs and memory nodes in cpuset), so that
# the pods' cgroups stay apart from the machine's and \`down\` finds them.
cgroupRoot: /${CGROUP_NAME}
containerRuntimeEndpoint: unix://${CONTAINERD_SOCKET}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: ${PKI}/ca.crt
authorization:
  mode: Webhook
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
resolvConf: ${ETC}/resolv.conf
clusterDomain: cluster.local
# The images exist only in this containerd and cannot be pulled again: never collect them, and
# do not evict pods because the machine's disk (shared with everything else) fills up.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
# Development machines often have swap.
failSwapOn: false
# The images \`up\` imports are used as they are. By default (KubeletEnsureSecretPulledImages, on
# since v1.35) an image counts as preloaded only until the kubelet pulls the same image under
# another name: pulling our image from a registry (\`registry add\`) would make every pod that
# names the imported copy try docker.io, and fail. Everything else is verified as by default.
imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages
preloadedImagesVerificationAllowlist:
$(for image in "${PAUSE_IMAGE}" "${WORKLOAD_IMAGE}" "${CONTROLLER_IMAGE}"; do
    printf -- '- %s\n- docker.io/library/%s\n' "${image%:*}" "${image%:*}"
  done)
YAML
}

# --- the node's namespaces -------------------------------------------------------------------

create_network() {
  if [[ ! -e "/run/netns/${NODE_NS}" ]]; then
    ip netns add "${NODE_NS}"
  fi
  if [[ ! -e "/run/netns/${LAN_NS}" ]]; then
    ip netns add "${LAN_NS}"
  fi
  if ! in_node_net ip link show uplink >/dev/null 2>&1; then
    # Created inside the node, then one end moved: no interface ever appears on the machine.
    in_node_net ip link add uplink type veth peer name "${NODE_NAME}"
    in_node_net ip link set "${NODE_NAME}" netns "${LAN_NS}"
    in_node_net ip address add "${NODE_IP}/${LAN_PREFIX}" dev uplink
    ip -n "${LAN_NS}" address add "${LAN_IP}/${LAN_PREFIX}" dev "${NODE_NAME}"
    in_node_net ip link set lo up
    in_node_net ip link set uplink up
    ip -n "${LAN_NS}" link set lo up
    ip -n "${LAN_NS}" link set "${NODE_NAME}" up
    in_node_net ip route add default via "${LAN_IP}"
    # Pods keep their addresses on the LAN (the bridge does not masquerade them).
    ip -n "${LAN_NS}" route add "${CLUSTER_CIDR}" via "${NODE_IP}"
  fi
  # The node routes between its pods and the LAN, and passes bridged pod-to-pod traffic through
  # netfilter, so that a Service's reply from a pod on the same bridge is un-NATed (the kubelet's
  # long-standing requirement for bridge networks, br_netfilter).
  in_node_net sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
}

# The kubelet sets these kernel tunables on start (or, with protectKernelDefaults, refuses to
# run unless they already have its values). They are not per namespace: on the node, each is a
# file of its own bind-mounted over /proc/sys, so the machine's stay as they are.
readonly KUBELET_SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

# The private mount namespace of the node, held by a long-lived process that every other
# program of the node joins (`ip netns exec` would remount /sys and hide the cgroup mounts).
# Private propagation: what the kubelet and containerd mount (volumes, root file systems) stays
# out of the machine's view, and disappears with the namespace.
start_mounts() {
  local sysctl setup=""
  # /run: containerd's shims put their sockets in /run/containerd/s whatever the state directory,
  # as does the containerd that Docker runs on this machine; runc's state, the pods' network
  # namespaces and the xtables lock of the node's iptables belong to the node too.
  setup+='mount -t tmpfs -o mode=0755 tmpfs /run && mkdir /run/lock && '
  # /var/log: the kubelet writes /var/log/pods and /var/log/containers.
  setup+="mount --bind '${STATE_DIR}/var-log' /var/log && "
  # /var/lib/cni: containerd's CNI library keeps its results cache there, with no setting to move
  # it. The machine has no such directory unless it runs CNI itself: up creates an empty one as a
  # mount point if need be, and down removes it.
  if [[ ! -d /var/lib/cni ]]; then
    mkdir /var/lib/cni
    : >"${STATE_DIR}/created-var-lib-cni"
  fi
  setup+="mount --bind '${STATE_DIR}/var-lib-cni' /var/lib/cni && "
  for sysctl in "${KUBELET_SYSCTLS[@]}"; do
    cat "/proc/sys/${sysctl}" >"${STATE_DIR}/sysctl/${sysctl//\//.}"
    setup+="mount --bind '${STATE_DIR}/sysctl/${sysctl//\//.}' '/proc/sys/${sysctl}' && "
  done
  launch mounts node-network unshare --mount --propagation private -- \
    bash -c "${setup} exec sleep infinity"
  wait_for "the node's mounts are in place" 10 mounts \
    nsenter "--mount=/proc/$(pid_of mounts)/ns/mnt" -- findmnt -n /var/lib/cni
}

# --- the components --------------------------------------------------------------------------

admin_token() { awk -F, '$3 == "admin" { print $1 }' "${PKI}/tokens.csv"; }

api_ready() {
  on_node curl -fsS --max-time 2 --cacert "${PKI}/ca.crt" \
    -H "Authorization: Bearer $(admin_token)" "https://127.0.0.1:${API_PORT}/readyz"
}

start_etcd() {
  launch etcd node "${ASSETS}/etcd" --name="${NODE_NAME}" --data-dir="${STATE_DIR}/etcd" \
    --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
    --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
    --initial-cluster="${NODE_NAME}=http://127.0.0.1:2380" \
    `# A development cluster: its data is thrown away, fsync would dominate its latency.` \
    --unsafe-no-fsync --log-level=warn
  wait_for "etcd answers" 60 etcd on_node curl -fsS --max-time 2 http://127.0.0.1:2379/health
}

start_kube_apiserver() {
  launch kube-apiserver node "${ASSETS}/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --advertise-address="${NODE_IP}" --secure-port="${API_PORT}" \
    --tls-cert-file="${PKI}/apiserver.crt" --tls-private-key-file="${PKI}/apiserver.key" \
    --client-ca-file="${PKI}/ca.crt" --token-auth-file="${PKI}/tokens.csv" \
    --service-account-key-file="${PKI}/service-account.key" \
    --service-account-signing-key-file="${PKI}/service-account.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-cluster-ip-range="${SERVICE_CIDR}" \
    --kubelet-client-certificate="${PKI}/kubelet-client.crt" \
    --kubelet-client-key="${PKI}/kubelet-client.key" \
    `# The node's name resolves nowhere: logs and exec reach the kubelet on its InternalIP.` \
    --kubelet-preferred-address-types=InternalIP \
    --allow-privileged=true --profiling=false
  wait_for "kube-apiserver is ready" 120 kube-apiserver api_ready
}

start_kube_controller_manager() {
  launch kube-controller-manager node "${ASSETS}/kube-controller-manager" \
    --kubeconfig="${ETC}/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --service-account-private-key-file="${PKI}/service-account.key" \
    --root-ca-file="${PKI}/ca.crt" --use-service-account-credentials=true \
    `# Node.spec.podCIDRs, which the CNI configuration and the controller's NodeCIDR mode use.` \
    --allocate-node-cidrs=true --cluster-cidr="${CLUSTER_CIDR}" --node-cidr-mask-size=24 \
    --service-cluster-ip-range="${SERVICE_CIDR}"
  wait_for "kube-controller-manager is healthy" 60 kube-controller-manager \
    on_node curl -fsSk --max-time 2 https://127.0.0.1:10257/healthz
}

start_kube_scheduler() {
  launch kube-scheduler node "${ASSETS}/kube-scheduler" \
    --kubeconfig="${ETC}/kube-scheduler.kubeconfig" --bind-address=127.0.0.1 --leader-elect=false
  wait_for "kube-scheduler is healthy" 60 kube-scheduler \
    on_node curl -fsSk --max-time 2 https://127.0.0.1:10259/healthz
}

start_containerd() {
  launch containerd node containerd --config "${ETC}/containerd.toml"
  wait_for "containerd answers" 60 containerd ctr_node version
}

start_kubelet() {
  launch kubelet node "${ASSETS}/kubelet" --config="${ETC}/kubelet.yaml" \
    --kubeconfig="${ETC}/kubelet.kubeconfig" --root-dir="${STATE_DIR}/kubelet" \
    --hostname-override="${NODE_NAME}" --node-ip="${NODE_IP}"
  wait_for "the kubelet is healthy" 120 kubelet \
    on_node curl -fsS --max-time 2 http://127.0.0.1:10248/healthz
  wait_for "the kubelet has registered node ${NODE_NAME}" 60 kubelet \
    kubectl_node get node "${NODE_NAME}"
}

start_kube_proxy() {
  launch kube-proxy node "${ASSETS}/kube-proxy" --kubeconfig="${ETC}/kube-proxy.kubeconfig" \
    --proxy-mode=nftables --hostname-override="${NODE_NAME}" --cluster-cidr="${CLUSTER_CIDR}" \
    `# The conntrack table's size is the machine's, not the node's: leave it.` \
    --conntrack-max-per-core=0 \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256
  wait_for "kube-proxy serves /proxyMode" 60 kube-proxy \
    on_node curl -fsS --max-time 2 http://127.0.0.1:10249/proxyMode
}

# The machine reaches the API server through two relays joined by a Unix socket (file-system
# sockets cross network namespaces): no address, route or rule is added on either side.
start_api_relay_node() {
  launch api-relay-node node socat "UNIX-LISTEN:${API_RELAY_SOCKET},fork,unlink-early,mode=600" \
    "TCP:127.0.0.1:${API_PORT}"
  wait_for "the node's relay listens" 10 api-relay-node test -S "${API_RELAY_SOCKET}"
}

start_api_relay_host() {
  local port
  port="$(cat "${STATE_DIR}/api-port" 2>/dev/null || true)"
  if [[ -z "${port}" ]] || ss -ltnH "sport = :${port}" | grep -q .; then
    for port in $(shuf -i 20000-32000 -n 50); do
      ss -ltnH "sport = :${port}" | grep -q . || break
    done
    printf '%s\n' "${port}" >"${STATE_DIR}/api-port"
  fi
  launch api-relay-host machine socat "TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr" \
    "UNIX-CONNECT:${API_RELAY_SOCKET}"
  write_kubeconfig "${ADMIN_KUBECONFIG}" "https://127.0.0.1:${port}" admin
  wait_for "the API server answers on the machine's 127.0.0.1:${port}" 20 api-relay-host \
    curl -fsS --max-time 2 --cacert "${PKI}/ca.crt" -H "Authorization: Bearer $(admin_token)" \
    "https://127.0.0.1:${port}/readyz"
}

kubectl_node() {
  on_node "${ASSETS}/kubectl" --kubeconfig="${ETC}/admin.kubeconfig" \
    --cache-dir="${STATE_DIR}/kube-cache" "$@"
}

node_pod_cidr() {
  kubectl_node get node "${NODE_NAME}" -o jsonpath='{.spec.podCIDR}'
}

# A function, not `test -n "$(…)"`: wait_for must ask again on every poll, and a command
# substitution in its arguments would be expanded once, before the first.
node_has_pod_cidr() {
  [[ -n "$(node_pod_cidr 2>/dev/null)" ]]
}

# The pod network, once the controller manager has given the node its pod CIDR: a bridge with
# host-local addresses from that CIDR; containerd picks the file up and the node becomes Ready.
write_cni_config() {
  local file="${STATE_DIR}/cni/net.d/10-bridge.conflist" pod_cidr
  [[ -f "${file}" ]] && return 0
  wait_for "node ${NODE_NAME} has a pod CIDR" 60 kube-controller-manager node_has_pod_cidr
  pod_cidr="$(node_pod_cidr)"
  cat >"${file}.new" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "${pod_cidr}" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "${STATE_DIR}/cni/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
  mv "${file}.new" "${file}"
}

start_component() {
  case "$1" in
    mounts) start_mounts ;;
    etcd) start_etcd ;;
    kube-apiserver) start_kube_apiserver ;;
    kube-controller-manager) start_kube_controller_manager ;;
    kube-scheduler) start_kube_scheduler ;;
    containerd)
      start_containerd
      import_image "${PAUSE_IMAGE}"
      import_image "${WORKLOAD_IMAGE}"
      import_image "${CONTROLLER_IMAGE}"
      ;;
    kubelet) start_kubelet ;;
    kube-proxy) start_kube_proxy ;;
    api-relay-node) start_api_relay_node ;;
    api-relay-host) start_api_relay_host ;;
    *) die "no component $1 (one of: ${COMPONENTS[*]})" ;;
  esac
}

# What programs driving the cluster need to know of it (the tests' fixture), next to the
# kubeconfig.
write_facts() {
  local memory
  memory="$(findmnt -rn -t cgroup -O memory -o TARGET | head -n 1)"
  cat >"${STATE_DIR}/cluster.json.new" <<JSON
{
  "nodeName": "${NODE_NAME}",
  "nodeIP": "${NODE_IP}",
  "nodeNetworkNamespace": "${NODE_NS}",
  "lanNetworkNamespace": "${LAN_NS}",
  "clusterCIDR": "${CLUSTER_CIDR}",
  "serviceCIDR": "${SERVICE_CIDR}",
  "podsMemoryCgroup": "${memory}/${CGROUP_NAME}/kubepods",
  "images": {
    "pause": "${PAUSE_IMAGE}",
    "workload": "${WORKLOAD_IMAGE}",
    "controller": "${CONTROLLER_IMAGE}"
  }
}
JSON
  mv "${STATE_DIR}/cluster.json.new" "${STATE_DIR}/cluster.json"
}

# --- commands --------------------------------------------------------------------------------

cmd_up() {
  require_root
  cgroups_v1 || die "cgroup v1 hierarchies are needed (this machine has none mounted)"
  ensure_packages
  ASSETS="$(bash "${repo_root}/scripts/envtest-build.sh" --node | tail -n 1)"
  build_images
  mkdir -p "${STATE_DIR}"
  lock_state
  write_pki
  write_configs
  create_network
  create_cgroups
  local component started_at=${SECONDS}
  if ! running mounts; then
    for component in "${COMPONENTS[@]}"; do
      # Its programs would see one node and the new ones another.
      ! running "${component}" || die "${component} runs without the node's mount namespace: run down, then up"
    done
  fi
  for component in "${COMPONENTS[@]}"; do
    if ! running "${component}"; then
      log "starting ${component}"
      start_component "${component}"
    elif [[ "${component}" == containerd ]]; then
      # Images rebuilt since the last `up` replace the node's copies.
      import_image "${PAUSE_IMAGE}"
      import_image "${WORKLOAD_IMAGE}"
      import_image "${CONTROLLER_IMAGE}"
    fi
    if [[ "${component}" == kubelet ]]; then write_cni_config; fi
  done
  wait_for "node ${NODE_NAME} is Ready" 120 kubelet \
    kubectl_admin wait --for=condition=Ready --timeout=2s "node/${NODE_NAME}"
  write_facts
  log "up in $((SECONDS - started_at)) s; kubectl --kubeconfig ${ADMIN_KUBECONFIG} get nodes"
  printf '%s\n' "${ADMIN_KUBECONFIG}"
}

cmd_down() {
  require_root
  if [[ -d "${STATE_DIR}" ]]; then
    lock_state
  fi
  # Everything of the node is in its cgroups: killing them ends the mount namespace, and with it
  # every mount made there.
  remove_cgroups
  local ns
  for ns in "${NODE_NS}" "${LAN_NS}"; do
    if [[ -e "/run/netns/${ns}" ]]; then ip netns delete "${ns}"; fi
  done
  if [[ -f "${STATE_DIR}/created-var-lib-cni" ]]; then
    rmdir /var/lib/cni 2>/dev/null || log "/var/lib/cni is not empty: left in place"
  fi
  rm -rf "${STATE_DIR}"
  log "down: no process, cgroup, mount, network namespace or state of the node is left"
}

cmd_status() {
  local component pid all=true none=true
  for component in "${COMPONENTS[@]}"; do
    if pid="$(pid_of "${component}")"; then
      printf '%-24s running (pid %s)\n' "${component}" "${pid}"
      none=false
    else
      printf '%-24s stopped\n' "${component}"
      all=false
    fi
  done
  if [[ "${none}" == true ]]; then return 3; fi
  if [[ -f "${ADMIN_KUBECONFIG}" ]]; then printf 'kubeconfig               %s\n' "${ADMIN_KUBECONFIG}"; fi
  [[ "${all}" == true ]] || return 1
}

cmd_restart() {
  require_root
  [[ $# == 1 ]] || usage
  local component="$1"
  printf '%s\n' "${COMPONENTS[@]}" | grep -qx -- "${component}" ||
    die "no component ${component} (one of: ${COMPONENTS[*]})"
  [[ "${component}" != mounts ]] || die "the mount namespace is the node: use down and up"
  running mounts || die "the cluster is not up"
  ASSETS="$(bash "${repo_root}/scripts/envtest-build.sh" --node --check | tail -n 1)"
  lock_state
  stop_component "${component}"
  if [[ "${component}" == containerd ]]; then
    start_containerd
  else
    start_component "${component}"
  fi
  log "restarted ${component}"
}

# A registry on the machine's 127.0.0.1:PORT appears on the node's own 127.0.0.1:PORT through
# two relays joined by a Unix socket, the API server's relays the other way round: the node
# reaches nothing else of the machine. Its hosts.toml tells containerd to speak plain HTTP there.
cmd_registry() {
  require_root
  [[ $# == 2 && ( "$1" == add || "$1" == remove ) ]] || usage
  local action="$1" address="$2" port
  [[ "${address}" =~ ^127\.0\.0\.1:([0-9]{1,5})$ ]] ||
    die "registry wants 127.0.0.1:PORT (a registry on the machine's loopback), got '${address}'"
  port="${BASH_REMATCH[1]}"
  running mounts || die "the cluster is not up"
  lock_state
  local socket="${STATE_DIR}/registry-${port}.sock" hosts="${REGISTRY_HOSTS_DIR}/${address}"
  stop_component "registry-${port}-node"
  stop_component "registry-${port}-machine"
  rm -rf "${hosts}" "${socket}"
  if [[ "${action}" == remove ]]; then
    log "the node no longer reaches ${address}"
    return 0
  fi
  grep -q 'config_path = "'"${REGISTRY_HOSTS_DIR}"'"' "${ETC}/containerd.toml" ||
    die "the node's containerd was started without registry configuration: run down, then up"
  launch "registry-${port}-machine" machine socat \
    "UNIX-LISTEN:${socket},fork,unlink-early,mode=600" "TCP:${address}"
  wait_for "the registry's relay listens" 10 "registry-${port}-machine" test -S "${socket}"
  launch "registry-${port}-node" node-network socat \
    "TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:${socket}"
  mkdir -p "${hosts}"
  cat >"${hosts}/hosts.toml" <<TOML
server = "http://${address}"

[host."http://${address}"]
  capabilities = ["pull", "resolve"]
TOML
  wait_for "the node reaches the registry at ${address}" 20 "registry-${port}-node" \
    on_node curl -fsS --max-time 2 -o /dev/null "http://${address}/v2/"
  log "the node pulls from ${address}"
}

cmd_exec() {
  require_root
  (($# > 0)) || usage
  running mounts || die "the cluster is not up"
  on_node "$@"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  restart)
    shift
    cmd_restart "$@"
    ;;
  exec)
    shift
    cmd_exec "$@"
    ;;
  registry)
    shift
    cmd_registry "$@"
    ;;
  *) usage ;;
esac
