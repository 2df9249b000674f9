#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for testing `attnlab sweep --emit slurm` for real.
#   tools/slurm_local.sh start DIR    # installs slurm-wlm and munge if missing; prints `export SLURM_CONF=...`
#   tools/slurm_local.sh stop DIR
# munged runs as the munge user, slurmctld and slurmd as root (SlurmUser=root), with their state,
# spool, logs and pid files in DIR. Process tracking by /proc (no cgroups), no task plugin, no
# accounting: enough to run job arrays on this node's cores.
set -euo pipefail
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,4p' "$0" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf="$dir/slurm.conf"

stop() {
  # munged.pid exists only when this script started munged (a running one is shared, not stopped).
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 1
  rm -f "$dir"/*.pid
}

case "$cmd" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "slurm_local.sh: start or stop, got $cmd" >&2; exit 2 ;;
esac

bash "$(dirname "$0")/apt_install.sh" slurm-wlm munge

host=$(hostname -s)
cpus=$(nproc)
mkdir -p "$dir/state" "$dir/spool" /run/munge
[ -f /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown munge:munge /etc/munge/munge.key /run/munge
chmod 400 /etc/munge/munge.key
cat > "$conf" <<CONF
ClusterName=attnlab
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
stop
if ! pgrep -u munge -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
  pgrep -u munge -x munged > "$dir/munged.pid"
fi
SLURM_CONF="$conf" /usr/sbin/slurmctld -f "$conf"
SLURM_CONF="$conf" /usr/sbin/slurmd -f "$conf"
# Wait until the node takes jobs.
for _ in $(seq 60); do
  state=$(SLURM_CONF="$conf" sinfo -h -o %T 2>/dev/null | head -n 1 || true)
  case "$state" in idle*|mixed*|allocated*) echo "export SLURM_CONF=$conf"; exit 0 ;; esac
  sleep 1
done
echo "slurm_local.sh: the node did not come up (see $dir/slurmctld.log, $dir/slurmd.log)" >&2
exit 1
