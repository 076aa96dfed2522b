#!/usr/bin/env bash
# slurm-local.sh: a throwaway single-node SLURM cluster (munged + slurmctld + slurmd)
# for wfpipe's SLURM executor tests, on localhost only, without systemd. Works with
# Debian 12's slurm 22.05.8 and munge 0.5.15, as root (CI) or as an ordinary user.
#
# Usage:
#   tools/slurm-local.sh install   # apt-get install the packages (needs root)
#   tools/slurm-local.sh start     # wipe state, start daemons, wait until the node is idle,
#                                  # write $LOCAL_SLURM_DIR/env.sh
#   tools/slurm-local.sh stop      # cancel all jobs, stop daemons by PID, remove env.sh
#   tools/slurm-local.sh restart
#   tools/slurm-local.sh status
#   tools/slurm-local.sh env       # prints the exports of env.sh
#
# After `start`, `. /tmp/wfpipe-slurm/env.sh` points the SLURM client tools at the
# cluster (SLURM_CONF) and sets WFPIPE_REQUIRE_SLURM=1, so that `cargo test` fails
# instead of skipping the SLURM tests if the cluster stops answering.
#
# Settings (environment variables):
#   LOCAL_SLURM_DIR         where config, state, logs and sockets live [/tmp/wfpipe-slurm]
#   LOCAL_SLURM_AUTH        munge | none                                  [munge]
#   LOCAL_SLURM_CPUS        CPUs the node advertises (may exceed nproc)   [8]
#   LOCAL_SLURM_MEM_MB      RealMemory the node advertises                [32768]
#   LOCAL_SLURM_GPUS        advertise N fake GPUs as gres gpu:N (0 = none) [0]
#   LOCAL_SLURM_CTLD_PORT   slurmctld port                                [6817]
#   LOCAL_SLURM_SLURMD_PORT slurmd port                                   [6818]
#   LOCAL_SLURM_CLUSTER     ClusterName                                   [localci]
#   LOCAL_SLURM_DBD         1: also run MariaDB + slurmdbd so that plain
#                           `sacct` works (needs packages slurmdbd and
#                           mariadb-server-core; `install` adds them)      [0]
#   LOCAL_SLURM_DBD_PORT    slurmdbd port                                 [6819]
#   LOCAL_SLURM_MYSQL_PORT  MariaDB port (127.0.0.1 only)                 [6820]
#   LOCAL_SLURM_KILL_INVALID_DEPEND 1: a job whose dependency can never be
#                           satisfied is CANCELLED; 0: it stays PENDING
#                           with Reason=DependencyNeverSatisfied (Slurm's default) [1]
# Runs as root or as an ordinary user (then jobs run as that user only).
set -euo pipefail

BASE=${LOCAL_SLURM_DIR:-/tmp/wfpipe-slurm}
AUTH=${LOCAL_SLURM_AUTH:-munge}
CPUS=${LOCAL_SLURM_CPUS:-8}
MEM_MB=${LOCAL_SLURM_MEM_MB:-32768}
GPUS=${LOCAL_SLURM_GPUS:-0}
CTLD_PORT=${LOCAL_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${LOCAL_SLURM_SLURMD_PORT:-6818}
CLUSTER=${LOCAL_SLURM_CLUSTER:-localci}
KILL_INVALID_DEPEND=${LOCAL_SLURM_KILL_INVALID_DEPEND:-1}
DBD=${LOCAL_SLURM_DBD:-0}
DBD_PORT=${LOCAL_SLURM_DBD_PORT:-6819}
MYSQL_PORT=${LOCAL_SLURM_MYSQL_PORT:-6820}
NODE=localhost
CONF=$BASE/etc/slurm.conf
ME=$(id -un)
PATH=$PATH:/usr/sbin:/sbin

log() { echo "slurm-local: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $BASE == /?* ]] || die "LOCAL_SLURM_DIR must be an absolute path other than /"

cmd_install() {
  local pkgs="slurmctld slurmd slurm-client munge" need=0 c
  [ "$DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server-core"
  for c in slurmctld slurmd sbatch munged; do command -v $c >/dev/null || need=1; done
  if [ "$DBD" = 1 ]; then
    for c in slurmdbd mariadbd; do command -v $c >/dev/null || need=1; done
  fi
  if [ $need = 0 ]; then log "already installed: $(slurmctld -V)"; return 0; fi
  [ "$(id -u)" = 0 ] || die "install needs root"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's maintainer scripts try to start the packaged services; without
  # systemd/runlevel invoke-rc.d refuses, which is what we want (we start
  # our own instances with our own config).
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  log "installed: $(slurmctld -V)"
}

# pid from file, only if that process is alive and has the expected name
live_pid() { # file comm
  local f=$1 comm=$2 p
  [ -s "$f" ] || return 1
  p=$(cat "$f" 2>/dev/null) || return 1
  [[ $p =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$p/stat" ] || return 1
  # treat zombies as gone
  [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = Z ] && return 1
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$comm" ] || return 1
  echo "$p"
}

stop_pid() { # file comm
  local p i
  p=$(live_pid "$1" "$2") || return 0
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 1 100); do live_pid "$1" "$2" >/dev/null || { rm -f "$1"; return 0; }; sleep 0.1; done
  log "$2 ($p) did not stop after 10 s, sending SIGKILL"
  kill -KILL "$p" 2>/dev/null || true
  rm -f "$1"
}

# slurmstepd processes that belong to this cluster (they inherit SLURM_CONF)
our_stepds() {
  local d p
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$(cat "$d/comm" 2>/dev/null)" = slurmstepd ] || continue
    { tr '\0' '\n' < "$d/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$CONF" && echo "$p"
  done
  return 0
}

descendants() { # pid -> all descendant pids
  local kids k
  kids=$(ps -o pid= --ppid "$1" 2>/dev/null || true)
  for k in $kids; do echo "$k"; descendants "$k"; done
}

cmd_stop() {
  # only touch daemons of a directory this script set up
  [ -f "$BASE/.local-slurm" ] || { log "nothing to stop in $BASE"; return 0; }
  rm -f "$BASE/env.sh"
  if [ -f "$CONF" ] && live_pid "$BASE/run/slurmctld.pid" slurmctld >/dev/null; then
    local ids i
    ids=$(SLURM_CONF=$CONF timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [ -n "${ids// }" ]; then
      # shellcheck disable=SC2086
      SLURM_CONF=$CONF timeout 10 scancel $ids 2>/dev/null || true
      for i in $(seq 1 100); do
        [ -z "$(SLURM_CONF=$CONF timeout 5 squeue -h -t R,CG,CF -o %A 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
  fi
  stop_pid "$BASE/run/slurmd.pid" slurmd
  stop_pid "$BASE/run/slurmctld.pid" slurmctld
  # normally nothing is left; after a daemon crash, orphaned slurmstepd and
  # their job processes are: kill each whole tree (collected before killing)
  local p left tree=""
  left=$(our_stepds)
  for p in $left; do tree="$tree $p $(descendants "$p" | tr "\n" " ")"; done
  for p in $tree; do kill -KILL "$p" 2>/dev/null || true; done
  [ -z "$left" ] || log "killed leftover slurmstepd and their jobs: $tree"
  stop_pid "$BASE/run/slurmdbd.pid" slurmdbd
  stop_pid "$BASE/db/mariadbd.pid" mariadbd
  stop_pid "$BASE/munge/munged.pid" munged
  log "stopped"
}

# NoInAddrAny/NoCtldInAddrAny make the daemons bind to the address that
# gethostname() resolves to (not to SlurmctldHost/NodeAddr). Use them only
# when that address is loopback; otherwise the daemons would bind a LAN
# address while we point everything at 127.0.0.1.
hostname_is_loopback() {
  local a
  a=$(getent ahostsv4 "$(hostname)" 2>/dev/null | awk 'NR==1{print $1}')
  [[ $a == 127.* ]]
}

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

write_conf() {
  local mungesock=$BASE/munge/munge.socket sched gres_node="" gres_types="" acct comm
  if hostname_is_loopback; then
    comm="CommunicationParameters=NoInAddrAny,NoCtldInAddrAny"
  else
    comm="# hostname does not resolve to 127.x: daemons bind INADDR_ANY"
    log "WARNING: $(hostname) does not resolve to 127.x; daemons will listen on all interfaces"
  fi
  if [ "$DBD" = 1 ]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NODE
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/linux"
    # for slurmdbd connections the munge socket comes from AccountingStoragePass
    [ "$AUTH" = munge ] && acct="$acct
AccountingStoragePass=$mungesock"
  else
    acct="# no slurmdbd: plain sacct says \"accounting storage is disabled\";
# 'sacct -c' reads the job completion file below.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  local dep=""
  sched="batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=1"
  # 22.05: kill_invalid_depend belongs in DependencyParameters (ignored in SchedulerParameters)
  [ "$KILL_INVALID_DEPEND" = 1 ] && dep="DependencyParameters=kill_invalid_depend"
  if [ "$GPUS" -gt 0 ]; then
    gres_types="GresTypes=gpu"
    gres_node="Gres=gpu:$GPUS"
    # gres/gpu drops GPUs without File=. As root, char devices aliasing
    # /dev/null stand in for /dev/nvidiaN (then CUDA_VISIBLE_DEVICES is set);
    # otherwise plain files: scheduling works, CUDA_VISIBLE_DEVICES stays empty.
    mkdir -p "$BASE/dev"
    local i
    for i in $(seq 0 $((GPUS - 1))); do
      mknod "$BASE/dev/fakegpu$i" c 1 3 2>/dev/null || : > "$BASE/dev/fakegpu$i"
    done
    echo "NodeName=$NODE Name=gpu File=$BASE/dev/fakegpu[0-$((GPUS - 1))]" > "$BASE/etc/gres.conf"
  fi
  cat > "$CONF" <<EOF
# generated by tools/slurm-local.sh
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# bind to 127.0.0.1 only (the address hostname resolves to), not INADDR_ANY
$comm
SlurmUser=$ME
SlurmdUser=$ME
AuthType=auth/$AUTH
CredType=cred/$AUTH
$( [ "$AUTH" = munge ] && echo "AuthInfo=socket=$mungesock" || true )
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/slurmd.%n
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldDebug=${LOCAL_SLURM_DEBUG:-info}
SlurmdDebug=${LOCAL_SLURM_DEBUG:-info}
MailProg=/bin/true
# no cgroups: works in containers/sandboxes and for non-root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$acct
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.txt
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=$sched
$dep
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
# let the node advertise more CPUs than the machine has
SlurmdParameters=config_overrides
ReturnToService=2
# keep finished jobs visible to squeue/scontrol for a day
MinJobAge=86400
KillWait=2
InactiveLimit=0
$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM_MB $gres_node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_dbd() {
  local i
  mkdir -p "$BASE/db/data"
  # Throwaway MariaDB: empty datadir, no grant tables (any local client is
  # admin), TCP on 127.0.0.1 only. mariadbd does not fork: setsid + &.
  setsid mariadbd --no-defaults --datadir="$BASE/db/data" --user="$ME" \
    --skip-grant-tables --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
    --socket="$BASE/db/mysqld.sock" --pid-file="$BASE/db/mariadbd.pid" \
    --log-error="$BASE/log/mariadbd.log" --skip-name-resolve --skip-log-bin \
    --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
    --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
    </dev/null >/dev/null 2>&1 &
  for i in $(seq 1 200); do
    [ -S "$BASE/db/mysqld.sock" ] && live_pid "$BASE/db/mariadbd.pid" mariadbd >/dev/null && break
    sleep 0.1
  done
  [ -S "$BASE/db/mysqld.sock" ] || die "mariadbd did not start: $(tail -n 5 "$BASE/log/mariadbd.log")"
  {
    echo "AuthType=auth/$AUTH"
    if [ "$AUTH" = munge ]; then echo "AuthInfo=socket=$BASE/munge/munge.socket"; fi
    echo "DbdHost=$NODE"
    echo "DbdAddr=127.0.0.1"
    echo "DbdPort=$DBD_PORT"
    if hostname_is_loopback; then echo "CommunicationParameters=NoInAddrAny"; fi
    echo "SlurmUser=$ME"
    echo "PidFile=$BASE/run/slurmdbd.pid"
    echo "LogFile=$BASE/log/slurmdbd.log"
    echo "DebugLevel=info"
    echo "StorageType=accounting_storage/mysql"
    echo "StorageHost=127.0.0.1"
    echo "StoragePort=$MYSQL_PORT"
    echo "StorageUser=$ME"
    echo "StorageLoc=slurm_acct_db"
  } > "$BASE/etc/slurmdbd.conf"
  # slurmdbd wants its config private and owned by SlurmUser
  chmod 600 "$BASE/etc/slurmdbd.conf"
  # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF
  slurmdbd || die "slurmdbd failed: $(tail -n 5 "$BASE/log/slurmdbd.log")"
  local deadline=$((SECONDS + 30))
  until timeout 5 sacctmgr -n list cluster >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "slurmdbd not answering: $(tail -n 5 "$BASE/log/slurmdbd.log")"
    sleep 0.2
  done
  timeout 10 sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
  timeout 10 sacctmgr -n list cluster format=cluster 2>/dev/null | grep -qw "$CLUSTER" ||
    die "slurmdbd not answering: $(tail -n 5 "$BASE/log/slurmdbd.log")"
}

cmd_start() {
  command -v slurmctld >/dev/null || die "slurm not installed (run: $0 install)"
  cmd_stop >/dev/null 2>&1 || true
  port_free "$CTLD_PORT" || die "port $CTLD_PORT in use"
  port_free "$SLURMD_PORT" || die "port $SLURMD_PORT in use"
  if [ "$DBD" = 1 ]; then
    command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null ||
      die "LOCAL_SLURM_DBD=1 needs slurmdbd and mariadb-server-core (run: LOCAL_SLURM_DBD=1 $0 install)"
    port_free "$DBD_PORT" || die "port $DBD_PORT in use"
    port_free "$MYSQL_PORT" || die "port $MYSQL_PORT in use"
  fi
  # refuse to wipe a directory this script did not create
  if [ -d "$BASE" ] && [ -n "$(ls -A "$BASE")" ] && [ ! -f "$BASE/.local-slurm" ]; then
    die "$BASE is not empty and was not made by this script; pick another LOCAL_SLURM_DIR"
  fi
  mkdir -p "$BASE"; touch "$BASE/.local-slurm"
  rm -rf "$BASE/state" "$BASE/spool" "$BASE/log" "$BASE/run" "$BASE/munge" "$BASE/etc" "$BASE/dev" "$BASE/db"
  mkdir -p "$BASE/etc" "$BASE/state" "$BASE/spool" "$BASE/log" "$BASE/run"
  chmod 755 "$BASE"
  export SLURM_CONF=$CONF   # inherited by slurmstepd; used by our_stepds
  if [ "$AUTH" = munge ]; then
    # munged wants: socket dir world-executable, key dir private, key 0600
    mkdir -p -m 755 "$BASE/munge"; mkdir -p -m 700 "$BASE/munge/private"
    mungekey -c -b 1024 -k "$BASE/munge/private/munge.key"
    chmod 600 "$BASE/munge/private/munge.key"
    munged --socket="$BASE/munge/munge.socket" \
           --key-file="$BASE/munge/private/munge.key" \
           --pid-file="$BASE/munge/munged.pid" \
           --log-file="$BASE/munge/private/munged.log" \
           --seed-file="$BASE/munge/private/munged.seed" \
      || die "munged failed: $(tail -n 3 "$BASE/munge/private/munged.log" 2>/dev/null)"
    local i
    for i in $(seq 1 50); do [ -S "$BASE/munge/munge.socket" ] && break; sleep 0.1; done
    munge -S "$BASE/munge/munge.socket" -n | unmunge -S "$BASE/munge/munge.socket" >/dev/null \
      || die "munge self-test failed"
  fi
  write_conf
  if [ "$DBD" = 1 ]; then start_dbd; fi
  # daemonize; they write their pid files
  slurmctld -f "$CONF" -i || die "slurmctld failed: $(tail -n 5 "$BASE/log/slurmctld.log")"
  slurmd -f "$CONF" -N "$NODE" || die "slurmd failed: $(tail -n 5 "$BASE/log/slurmd.log")"
  local s="" t0=$SECONDS
  while [ $((SECONDS - t0)) -lt 30 ]; do
    s=$(timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    [ "$s" = idle ] && break
    case "$s" in inval*|drain*|down*) [ $((SECONDS - t0)) -ge 3 ] && break ;; esac
    sleep 0.1
  done
  if [ "$s" != idle ]; then
    log "node not idle (state: '$s')"
    SLURM_CONF=$CONF sinfo -R >&2 || true
    tail -n 20 "$BASE/log/slurmctld.log" "$BASE/log/slurmd.log" >&2 || true
    cmd_stop; exit 1
  fi
  cmd_env > "$BASE/env.sh.tmp" && mv "$BASE/env.sh.tmp" "$BASE/env.sh"
  log "up: node $NODE idle; . $BASE/env.sh"
}

cmd_env() {
  echo "export SLURM_CONF=$CONF"
  echo "export WFPIPE_REQUIRE_SLURM=1"
  echo "case \":\$PATH:\" in *:/usr/sbin:*) ;; *) export PATH=\"\$PATH:/usr/sbin\" ;; esac"
}

cmd_status() {
  local ok=0
  local daemons="munge/munged.pid:munged run/slurmctld.pid:slurmctld run/slurmd.pid:slurmd"
  [ "$DBD" = 1 ] && daemons="$daemons db/mariadbd.pid:mariadbd run/slurmdbd.pid:slurmdbd"
  for x in $daemons; do
    if p=$(live_pid "$BASE/${x%%:*}" "${x##*:}"); then echo "${x##*:}: running (pid $p)"
    else echo "${x##*:}: not running"; ok=1; fi
  done
  [ -f "$CONF" ] && SLURM_CONF=$CONF timeout 10 sinfo 2>&1 || true
  return $ok
}

case "${1:-}" in
  install) cmd_install ;;
  start)   cmd_start ;;
  stop)    cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status)  cmd_status ;;
  env)     cmd_env ;;
  *) echo "usage: $0 {install|start|stop|restart|status|env}" >&2; exit 2 ;;
esac
