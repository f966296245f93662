#!/usr/bin/env bash
# A one-node SLURM cluster and an SSH server on localhost, for the HPC tests (tests/hpc, marker `slurm`).
#
# Why: on clusters the parts that break are the remote transport, the scheduler directives, walltime kills and
# retrieval from a remote work dir; core.direct on localhost tests none of them. This script gives CI and developers
# a real SLURM (Debian slurm-wlm + munge) reached over a real SSH connection, without systemd:
#   - munged as the munge user (/run/munge),
#   - slurmctld + slurmd as root: proctrack/linuxproc, task/none, no accounting, select/cons_tres, and a fake GPU
#     GRES (gres.conf `Name=gpu File=/dev/null`) so `--gres=gpu:1` jobs schedule on a GPU-less machine,
#   - sshd on 127.0.0.1:$NMCML_SSH_PORT (default 2222) with a generated key for this user ($HOME/.ssh/id_nmcml,
#     known_hosts entry, authorised in /etc/ssh/nmcml_authorized_keys).
# Idempotent: what already runs is left alone; a second call takes about a second. Needs root (apt, daemons).
# Exit status 0 only when `sbatch` reaches the node and ssh to localhost works; otherwise it says why on stderr.
# Env: NMCML_SSH_PORT (2222), NMCML_SLURM_CPUS (the CPUs the node declares; default max(nproc, 4)),
#      NMCML_HPC_NO_INSTALL=1 (never call apt).
set -uo pipefail

PORT="${NMCML_SSH_PORT:-2222}"
KEY="$HOME/.ssh/id_nmcml"
NODE="$(hostname -s)"
NCPU="$(nproc)"
CPUS="${NMCML_SLURM_CPUS:-$((NCPU > 4 ? NCPU : 4))}"
T0=$(date +%s)

fail() {
    echo "start_hpc_services: CANNOT START: $*" >&2
    echo "start_hpc_services: the SLURM/SSH tests (marker slurm) will be skipped" >&2
    exit 1
}
say() { echo "start_hpc_services: $*"; }

[ "$(id -u)" = 0 ] || fail "needs root (apt-get, munged, slurmctld, slurmd, sshd); run it with sudo"

# ---- install (only what is missing) -------------------------------------------------------------------------
missing=()
command -v slurmctld >/dev/null 2>&1 || missing+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || missing+=(munge)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keyscan >/dev/null 2>&1 || missing+=(openssh-client)
if [ ${#missing[@]} -gt 0 ]; then
    [ "${NMCML_HPC_NO_INSTALL:-0}" = 1 ] && fail "missing packages ${missing[*]} and NMCML_HPC_NO_INSTALL=1"
    command -v apt-get >/dev/null 2>&1 || fail "missing packages ${missing[*]} and no apt-get here"
    say "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d: packages must not try to start services through systemd/init scripts while installing
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/nmcml-hpc-apt.log 2>&1; then
        apt-get update -q >>/tmp/nmcml-hpc-apt.log 2>&1
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/nmcml-hpc-apt.log 2>&1 ||
            { rm -f /usr/sbin/policy-rc.d; tail -20 /tmp/nmcml-hpc-apt.log >&2; fail "apt-get install failed"; }
    fi
    rm -f /usr/sbin/policy-rc.d
    say "installed in $(($(date +%s) - T0)) s"
fi

# ---- munge ------------------------------------------------------------------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --force || fail "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
    munge -n | unmunge >/dev/null 2>&1 || fail "munge credentials do not round-trip"
fi

# ---- slurm ------------------------------------------------------------------------------------------------------
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
CONF=/etc/slurm/slurm.conf
NEW_CONF="$(
    cat <<EOF
# written by aiida-nmcml scripts/start_hpc_services.sh: a one-node test cluster, not a production set-up
ClusterName=nmcml
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# the node may declare more CPUs than it has (several small test jobs at once on a 2-core machine)
SlurmdParameters=config_overrides
# walltime kills within seconds of the limit (the restart tests wait for them)
KillWait=5
OverTimeLimit=0
MinJobAge=120
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)"
NEW_GRES="NodeName=$NODE Name=gpu File=/dev/null"
changed=0
[ "$(cat "$CONF" 2>/dev/null)" = "$NEW_CONF" ] || { echo "$NEW_CONF" >"$CONF"; changed=1; }
[ "$(cat /etc/slurm/gres.conf 2>/dev/null)" = "$NEW_GRES" ] || { echo "$NEW_GRES" >/etc/slurm/gres.conf; changed=1; }

slurm_pid_alive() { [ -s "/run/slurm/$1.pid" ] && kill -0 "$(cat "/run/slurm/$1.pid")" 2>/dev/null; }
if [ $changed = 1 ]; then
    # a new configuration: stop what runs with the old one (only the daemons this script started, by pid file)
    for d in slurmd slurmctld; do slurm_pid_alive $d && kill "$(cat /run/slurm/$d.pid)" && sleep 1; done
fi
if ! slurm_pid_alive slurmctld; then
    /usr/sbin/slurmctld -i || fail "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
fi
if ! slurm_pid_alive slurmd; then
    /usr/sbin/slurmd -N "$NODE" || fail "slurmd did not start (see /var/log/slurm/slurmd.log)"
fi
ok=0
for _ in $(seq 60); do
    state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1)"
    case "$state" in idle* | mixed* | allocated* | completing*) ok=1 && break ;; esac
    case "$state" in down* | drain* | fail* | inval*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 ;; esac
    sleep 0.5
done
[ $ok = 1 ] || fail "the SLURM node is '${state:-unreachable}' (see /var/log/slurm/slurmd.log, slurmctld.log)"

# ---- sshd + a key for this user ---------------------------------------------------------------------------------
mkdir -p /run/sshd && chmod 0755 /run/sshd
ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A >/dev/null
mkdir -p "$HOME/.ssh" && chmod 700 "$HOME/.ssh"
[ -s "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C "aiida-nmcml hpc tests" -f "$KEY" || fail "ssh-keygen failed"
AUTH=/etc/ssh/nmcml_authorized_keys
grep -qF "$(cat "$KEY.pub")" "$AUTH" 2>/dev/null || cat "$KEY.pub" >>"$AUTH"
chmod 644 "$AUTH"
SSHD_PID=/run/sshd-nmcml.pid
if ! { [ -s $SSHD_PID ] && kill -0 "$(cat $SSHD_PID)" 2>/dev/null; }; then
    /usr/sbin/sshd -p "$PORT" -o ListenAddress=127.0.0.1 -o PidFile=$SSHD_PID \
        -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no \
        -o "AuthorizedKeysFile=.ssh/authorized_keys $AUTH" -o MaxStartups=50:30:100 -o MaxSessions=50 ||
        fail "sshd did not start on port $PORT"
fi
for _ in $(seq 20); do (echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.25; done
touch "$HOME/.ssh/known_hosts"
if ! ssh-keygen -F "[localhost]:$PORT" -f "$HOME/.ssh/known_hosts" >/dev/null 2>&1; then
    ssh-keyscan -p "$PORT" -t ed25519,rsa,ecdsa localhost 2>/dev/null >>"$HOME/.ssh/known_hosts"
fi
# UserKnownHostsFile: under `sudo -E` $HOME is the caller's, where AiiDA (paramiko) looks; ssh would read root's
ssh -p "$PORT" -i "$KEY" -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$HOME/.ssh/known_hosts" \
    "$(id -un)@localhost" true ||
    fail "ssh -p $PORT $(id -un)@localhost with $KEY was refused"

# ---- smoke: a job with a GPU request runs through the scheduler -------------------------------------------------
out="$(sbatch --wait --quiet --time=1 --gres=gpu:1 -o /dev/null --wrap true 2>&1)" ||
    fail "a --gres=gpu:1 test job did not run: $out"
say "SLURM node $NODE ($CPUS CPUs, gres gpu:1) and sshd on 127.0.0.1:$PORT (key $KEY) ready in $(($(date +%s) - T0)) s"
