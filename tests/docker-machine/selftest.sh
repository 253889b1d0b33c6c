#!/usr/bin/env bash
# Self-test of the docker-machine stand-in: every behaviour listed in README.md, in a temp store.
# Prints "N passed, M failed" and exits non-zero when anything failed.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
DM="$HERE/docker-machine"
T="$(mktemp -d "${TMPDIR:-/tmp}/dm-selftest.XXXXXX")"
S="$T/store"
ORPHANS=()
cleanup() {
  local p
  for p in "${ORPHANS[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT

# keep the caller's environment from steering the stand-in
unset MACHINE_STORAGE_PATH MACHINE_DRIVER DOCKER_HOST STANDIN_ENGINE_URL DIGITALOCEAN_ACCESS_TOKEN \
  STANDIN_CREATE_DELAY_MS STANDIN_FAIL_CREATE STANDIN_FAIL_MATCH STANDIN_HALF_CREATE STANDIN_HANG \
  STANDIN_STATE_DIR STANDIN_CLAIM_WINDOW_MS STANDIN_CLAIM_BARRIER STANDIN_CERT_DELAY_MS STANDIN_DROPLET_IP_WAIT_MS \
  STANDIN_CRASH_WAIT_MS MACHINE_BUGSNAG_API_TOKEN MACHINE_TLS_CA_CERT MACHINE_TLS_CA_KEY \
  MACHINE_TLS_CLIENT_CERT MACHINE_TLS_CLIENT_KEY
# failed creates leave their plugin child behind for this long (the real one: 10 s)
# The caller's secrets (LC_SECRET_KEY, cloud tokens...) would show up in calls.log's
# env_names; the checks below expect only the variables they set themselves.
while read -r name; do
  case "$name" in
    *_TOKEN | *_KEY | *_SECRET | *_PASSWORD) unset "$name" ;;
  esac
done < <(compgen -e)
export STANDIN_PLUGIN_LINGER_MS=300
export SHELL=/bin/bash

# an engine address nothing listens on, and a socket path that does not exist
DEAD="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
NOSOCK="$T/no-engine.sock"

PASS=0
FAILED=0
pass() { PASS=$((PASS + 1)); }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL: %s\n' "$*" >&2; }

# run CMD...: sets OUT, ERR, RC
run() {
  OUT="$("$@" 2>"$T/stderr" </dev/null)"
  RC=$?
  ERR="$(cat "$T/stderr")"
}
dm() { "$DM" -s "$S" "$@"; }

rc_is() { if [[ "$RC" == "$1" ]]; then pass; else fail "$2: exit code $RC, wanted $1 (stderr: $ERR)"; fi; }
out_has() { if [[ "$OUT" == *"$1"* ]]; then pass; else fail "$2: stdout lacks [$1]: [$OUT]"; fi; }
out_lacks() { if [[ "$OUT" != *"$1"* ]]; then pass; else fail "$2: stdout has [$1]"; fi; }
out_is() { if [[ "$OUT" == "$1" ]]; then pass; else fail "$2: stdout is [$OUT], wanted [$1]"; fi; }
err_has() { if [[ "$ERR" == *"$1"* ]]; then pass; else fail "$2: stderr lacks [$1]: [$ERR]"; fi; }
err_is() { if [[ "$ERR" == "$1" ]]; then pass; else fail "$2: stderr is [$ERR], wanted [$1]"; fi; }
check() { if eval "$1"; then pass; else fail "$2"; fi; }
# json_is FILE PYTHON_EXPR EXPECTED: python3 -c 'print(EXPR)' with j = json.load(FILE)
json_is() {
  local got
  got="$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>&1)"
  if [[ "$got" == "$3" ]]; then pass; else fail "json $2 in $1 is [$got], wanted [$3]"; fi
}
# json_all FILE EXPR WANT [EXPR WANT ...]: like json_is, many checks in one python3
json_all() {
  local f="$1" res line
  shift
  res="$(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
a = sys.argv[2:]
for e, w in zip(a[::2], a[1::2]):
    try:
        g = str(eval(e))
    except Exception as x:
        g = "error: %r" % x
    print("ok" if g == w else "json %s is [%s], wanted [%s]" % (e, g, w))
' "$f" "$@" 2>&1)"
  while IFS= read -r line; do
    if [[ "$line" == ok ]]; then pass; else fail "$line in $f"; fi
  done <<<"$res"
}
# kill -9 a background job without bash's "Killed" notice
quiet_kill9() {
  exec 3>&2 2>/dev/null
  kill -9 "$1"
  wait "$1"
  exec 2>&3 3>&-
}
not_exist_msg() {
  printf 'Docker machine "%s" does not exist. Use "docker-machine ls" to list machines. Use "docker-machine create" to add a new one.' "$1"
}

# ------------------------------------------------------------------ version and usage
for v in version -v --version; do
  run "$DM" "$v"
  rc_is 0 "$v"
  out_is "docker-machine version 0.16.2, build bd45ab13" "$v"
done
run dm frobnicate
rc_is 1 "unknown subcommand"
err_is "docker-machine: 'frobnicate' is not a docker-machine command. See '$DM --help'." "unknown subcommand: one line on stderr"
out_is "" "unknown subcommand: nothing on stdout"
# usage errors: `Incorrect Usage.` and the help on stdout, the flag error on stderr, exit 0
run dm ls --bogus
rc_is 0 "unknown ls flag exits 0 (codegangsta/cli)"
err_is "flag provided but not defined: -bogus" "unknown ls flag"
check "[[ \"\$(head -n1 <<<\"\$OUT\")\" == 'Incorrect Usage.' ]]" "unknown ls flag: Incorrect Usage. first on stdout"
out_has "Usage: docker-machine ls [OPTIONS] [arg...]" "unknown ls flag: ls help on stdout"
run "$DM" --bogus-global ls
rc_is 0 "unknown global flag exits 0"
err_is "flag provided but not defined: -bogus-global" "unknown global flag"
out_has "Incorrect Usage." "unknown global flag"
out_has "Usage: docker-machine [OPTIONS] COMMAND [arg...]" "unknown global flag: global help"
run dm ls -t abc
rc_is 0 "bad ls -t value"
err_is 'invalid value "abc" for flag -t: parse error' "bad ls -t value"
run dm url --bogus x
rc_is 0 "unknown url flag"
out_has "Usage: docker-machine url [arg...]" "unknown url flag"
run dm rm
rc_is 1 "rm without names"
out_has "Usage: docker-machine rm [OPTIONS] [arg...]" "rm without names prints the help"
err_is "Error: Expected to get one or more machine names as arguments" "rm without names"
run "$DM" -s "$S" -D --native-ssh ls -q
rc_is 0 "global -D and --native-ssh accepted"

# ------------------------------------------------------------------ create: none driver
run dm create --driver none --url unix://$NOSOCK m1
rc_is 0 "create none"
out_has "Running pre-create checks..." "create none"
out_has "Creating machine..." "create none"
out_has "To see how to connect your Docker Client to the Docker Engine running on this virtual machine, run: " "create none"
out_has "env m1" "create none"
out_has "Creating CA: $S/certs/ca.pem" "first create makes the CA"
for f in certs/ca.pem certs/cert.pem certs/key.pem certs/ca-key.pem machines/m1/config.json; do
  check "[[ -s '$S/$f' ]]" "store has $f"
done
check "grep -q 'BEGIN CERTIFICATE' '$S/certs/ca.pem'" "ca.pem is PEM text"

run dm inspect m1
rc_is 0 "inspect m1"
printf '%s\n' "$OUT" >"$T/inspect.json"
json_all "$T/inspect.json" \
  "j['Driver']['URL']" "unix://$NOSOCK" \
  "j['Driver']['IPAddress']" "" \
  "j['Driver']['MachineName']" "m1" \
  "j['Driver']['StorePath']" "$S" \
  "j['DriverName']" "none" \
  "j['Name']" "m1" \
  "j['ConfigVersion']" "3" \
  "j['HostOptions']['AuthOptions']['CaCertPath']" "$S/certs/ca.pem" \
  "j['HostOptions']['AuthOptions']['ClientCertPath']" "$S/certs/cert.pem" \
  "j['HostOptions']['AuthOptions']['ClientKeyPath']" "$S/certs/key.pem" \
  "j['HostOptions']['AuthOptions']['StorePath']" "$S/machines/m1" \
  "sorted(j['Driver'])" "['IPAddress', 'MachineName', 'SSHKeyPath', 'SSHPort', 'SSHUser', 'StorePath', 'SwarmDiscovery', 'SwarmHost', 'SwarmMaster', 'URL']" \
  "sorted(j['HostOptions'])" "['AuthOptions', 'Disk', 'Driver', 'EngineOptions', 'Memory', 'SwarmOptions']" \
  "sorted(j['HostOptions']['AuthOptions'])" "['CaCertPath', 'CaCertRemotePath', 'CaPrivateKeyPath', 'CertDir', 'ClientCertPath', 'ClientKeyPath', 'ServerCertPath', 'ServerCertRemotePath', 'ServerCertSANs', 'ServerKeyPath', 'ServerKeyRemotePath', 'StorePath']" \
  "j == json.load(open('$S/machines/m1/config.json'))" "True"
check "[[ \"\$(sed -n 2p '$T/inspect.json')\" == '    \"ConfigVersion\": 3,' ]]" "inspect indents by 4"
run dm inspect --format '{{.Driver.URL}}|{{json .HostOptions.AuthOptions.ServerCertSANs}}' m1
out_is "unix://$NOSOCK|[]" "inspect --format"

run dm create -d none --url tcp://127.0.0.1:$DEAD m2
rc_is 0 "create -d none tcp"
out_lacks "Creating CA" "second create reuses the CA"
run dm url m2
out_is "tcp://127.0.0.1:$DEAD" "url m2"
run dm ip m2
out_is "127.0.0.1:$DEAD" "ip of a none tcp://host:port machine is host:port"
run dm inspect -f '{{.Driver.IPAddress}}' m2
out_is "127.0.0.1:$DEAD" "Driver.IPAddress of a none tcp:// machine"
run dm ip m1
rc_is 0 "ip of a unix:// machine"
out_is "" "ip of a unix:// machine is empty"

run dm create --driver none m3
rc_is 1 "none without --url"
err_has "--url option is required when no driver is selected" "none without --url"
check "[[ ! -e '$S/machines/m3' ]]" "failed create leaves nothing"

run dm create --driver none --url unix:///x m1
rc_is 1 "create existing"
err_is 'Docker machine "m1" already exists' "create existing"

run dm create --driver none --url unix:///x 'bad_name!'
rc_is 1 "invalid name"
err_has "Error creating machine: Invalid hostname specified." "invalid name"
run dm create --driver none --url unix:///x -leading-dash
rc_is 1 "name starting with a dash"

run dm create --driver none --url unix:///x
rc_is 1 "create without name"
err_has "Error: No machine name specified" "create without name"

run dm create --driver none m4 --url unix:///x
rc_is 1 "flags after the name (Go flag parsing)"
err_has "Invalid command line. Found extra arguments" "flags after the name"

run dm create --driver virtualbox m5
rc_is 3 "virtualbox: pre-create check fails with exit 3"
err_is 'Error with pre-create check: "VBoxManage not found. Make sure VirtualBox is installed and VBoxManage is in the path"' "virtualbox pre-create"
out_is "Running pre-create checks..." "virtualbox pre-create"
run dm create --driver hetzner --hetzner-api-token x m5
rc_is 1 "hetzner plugin absent"
err_is 'Driver "hetzner" not found. Do you have the plugin binary "docker-machine-driver-hetzner" accessible in your PATH?' "hetzner plugin absent"

run dm create --driver none --url unix:///x --no-such-flag m5
rc_is 1 "unknown create flag (create exits 1)"
err_is "flag provided but not defined: -no-such-flag" "unknown create flag"
out_has "Incorrect Usage." "unknown create flag"
out_has "--url 												URL of host when no driver is selected" "create help lists the driver's flags"
run dm create --driver none --url 'tcp://[::1' m5
rc_is 1 "unparsable --url"
err_is "Error setting machine configuration from flags provided: parse \"tcp://[::1\": missing ']' in host" "unparsable --url"

# ------------------------------------------------------------------ create: digitalocean driver
run env STANDIN_ENGINE_URL=unix:///engine.sock "$DM" -s "$S" create --driver digitalocean do1
rc_is 1 "digitalocean without a token"
err_has "requires the --digitalocean-access-token option" "digitalocean without a token"
check "[[ ! -e '$S/machines/do1' ]]" "digitalocean without a token leaves nothing"

run env DIGITALOCEAN_ACCESS_TOKEN=tok-secret-123 "$DM" -s "$S" create --driver digitalocean do1
rc_is 1 "digitalocean without STANDIN_ENGINE_URL"
err_has "STANDIN_ENGINE_URL" "digitalocean without STANDIN_ENGINE_URL"

run env DIGITALOCEAN_ACCESS_TOKEN=tok-secret-123 STANDIN_ENGINE_URL=unix:///engine.sock \
  "$DM" -s "$S" create --driver digitalocean --digitalocean-region fra1 --digitalocean-size s-2vcpu-4gb \
  --digitalocean-image ubuntu-22-04-x64 --digitalocean-ipv6 --digitalocean-tags a,b do1
rc_is 0 "digitalocean with env token"
out_has "(do1) Creating Digital Ocean droplet..." "digitalocean progress"
out_has "Docker is up and running!" "digitalocean progress"
out_has "env do1" "digitalocean progress"
run dm inspect do1
printf '%s\n' "$OUT" >"$T/do1.json"
json_all "$T/do1.json" \
  "j['DriverName']" "digitalocean" \
  "j['Driver']['URL']" "unix:///engine.sock" \
  "j['Driver']['IPAddress']" "127.0.0.1" \
  "j['Driver']['DropletID'] > 0" "True" \
  "j['Driver']['Region']" "fra1" \
  "j['Driver']['SSHUser']" "root"
run dm url do1
out_is "unix:///engine.sock" "url do1"

run env STANDIN_ENGINE_URL=unix:///engine.sock "$DM" -s "$S" create --driver digitalocean \
  --digitalocean-access-token=flag-token-456 do2
rc_is 0 "digitalocean with --digitalocean-access-token"

# ------------------------------------------------------------------ call log
LOG="$S/.standin/calls.log"
check "[[ -s '$LOG' ]]" "calls.log exists"
check "python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' '$LOG'" "calls.log is JSON lines"
check "! grep -q tok-secret-123 '$LOG'" "calls.log never holds env values"
check "grep -q '\"env_names\": \[\"DIGITALOCEAN_ACCESS_TOKEN\"\]' '$LOG'" "calls.log names DIGITALOCEAN_ACCESS_TOKEN"
check "python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][-1]; assert sorted(r)==[\"argv\",\"env_names\",\"pid\",\"time\"] and r[\"argv\"][-1]==\"do2\" and isinstance(r[\"time\"], float)' '$LOG'" "calls.log record shape"
run env MY_API_KEY=k SOME_PASSWORD=p DB_SECRET=s GH_TOKEN=t UNRELATED=u "$DM" -s "$S" ls -q
check "tail -n1 '$LOG' | grep -q '\"env_names\": \[\"DB_SECRET\", \"GH_TOKEN\", \"MY_API_KEY\", \"SOME_PASSWORD\"\]'" "env_names picks *_TOKEN/_KEY/_SECRET/_PASSWORD"

# ------------------------------------------------------------------ url / status / inspect / ip on missing names
for c in url status inspect ip; do
  run dm "$c" ghost
  rc_is 1 "$c missing"
  err_is "$(not_exist_msg ghost)" "$c missing"
done
run dm status m1
rc_is 0 "status m1"
out_is "Running" "status m1"
run dm url
rc_is 1 "url without a name and no default machine"
err_has 'no "default" machine exists' "url without a name"
run dm url m1 m2
rc_is 1 "url with two names"
err_has "Expected one machine name" "url with two names"

# ------------------------------------------------------------------ env / config
HINT="You can attempt to regenerate them using 'docker-machine regenerate-certs [name]'.
Be advised that this will trigger a Docker daemon restart which might stop running containers."
run dm env m1
rc_is 1 "env on a unix:// none machine"
err_is "Error checking TLS connection: Error checking and/or regenerating the certs: There was an error validating certificates for host \"\": dial tcp: missing address
$HINT" "env on a unix:// none machine"
run dm config m1
rc_is 1 "config on a unix:// none machine"
err_is "Error running connection boilerplate: Error checking and/or regenerating the certs: There was an error validating certificates for host \"\": dial tcp: missing address
$HINT" "config on a unix:// none machine"
run dm env m2
rc_is 1 "env on an unreachable tcp:// machine"
err_has "Error checking TLS connection: Error checking and/or regenerating the certs: There was an error validating certificates for host \"127.0.0.1:$DEAD\": dial tcp 127.0.0.1:$DEAD: connect: connection refused" "env dials the engine"
run dm config m2
rc_is 1 "config on an unreachable tcp:// machine"
err_has "Error running connection boilerplate: Error checking and/or regenerating the certs: There was an error validating certificates for host \"127.0.0.1:$DEAD\": dial tcp 127.0.0.1:$DEAD: connect: connection refused" "config dials the engine"

# ------------------------------------------------------------------ ls
for n in b a10 a2 a; do dm create -d none --url unix:///x "$n" >/dev/null 2>&1; done
run dm ls -q
rc_is 0 "ls -q"
out_is "$(printf '%s\n' a a10 a2 b do1 do2 m1 m2)" "ls -q lists in directory order"
run dm ls --format '{{.Name}}|{{.DriverName}}|{{.State}}|{{.URL}}|{{.Error}}' --filter name=^m
out_is "$(printf '%s\n' "m1|none|Running|unix://$NOSOCK|Unable to query docker version: Get \"http://unix.sock/v1.15/version\": dial unix $NOSOCK: connect: no such file or directory" "m2|none|Running|tcp://127.0.0.1:$DEAD|Unable to query docker version: Cannot connect to the docker engine endpoint")" "ls --format queries every engine; unreachable ones stay Running"
run env DOCKER_HOST=tcp://127.0.0.1:$DEAD "$DM" -s "$S" ls --format '{{.Name}} {{.Active}}' --filter name=^m
out_is "$(printf '%s\n' 'm1 -' 'm2 *')" "ls .Active follows DOCKER_HOST"
run dm ls
rc_is 0 "ls table"
check "[[ \"\$(head -n1 <<<\"\$OUT\" | tr -s ' ')\" == 'NAME ACTIVE DRIVER STATE URL SWARM DOCKER ERRORS' ]]" "ls table header"
check "[[ \"\$(sed -n 2p <<<\"\$OUT\" | awk '{print \$1, \$3, \$4}')\" == 'a none Running' ]]" "ls table row"
run dm ls --format '{{.Nope}}'
rc_is 1 "ls --format with an unknown field"

# ------------------------------------------------------------------ rm
run dm rm -y ghost
rc_is 1 "rm missing"
err_has 'Docker machine "ghost" does not exist.' "rm missing"
err_has 'Error removing host "ghost": ' "rm missing"
run dm rm -f ghost
rc_is 0 "rm -f missing"
run dm rm -y a
rc_is 0 "rm -y a"
out_has "About to remove a" "rm -y a"
out_has "WARNING: This action will delete both local reference and remote instance." "rm -y a"
out_has "Successfully removed a" "rm -y a"
check "[[ ! -e '$S/machines/a' ]]" "rm removes the machine dir"
OUT="$(echo n | dm rm a2 2>/dev/null)"
if [[ "$OUT" == *"Are you sure? (y/n)"* ]]; then pass; else fail "rm asks for confirmation"; fi
check "[[ -e '$S/machines/a2' ]]" "rm answered n keeps the machine"
OUT="$(echo y | dm rm a2 2>/dev/null)"
if [[ "$OUT" == *"Successfully removed a2"* ]]; then pass; else fail "rm answered y removes"; fi
run dm rm -y a10 b
rc_is 0 "rm two names"
out_has "About to remove a10, b" "rm two names"

# ------------------------------------------------------------------ STANDIN_FAIL_CREATE
for i in 1 2; do
  run env STANDIN_FAIL_CREATE=2 "$DM" -s "$S" create -d none --url unix:///x f1
  rc_is 1 "fail-create attempt $i"
  err_is "Error creating machine: Error in driver during machine creation: stand-in induced failure" "fail-create attempt $i"
  check "[[ ! -e '$S/machines/f1' ]]" "fail-create attempt $i leaves nothing"
done
run env STANDIN_FAIL_CREATE=2 "$DM" -s "$S" create -d none --url unix:///x f1
rc_is 0 "fail-create third attempt succeeds"
check "[[ \"\$(cat '$S/.standin/fail-count-f1')\" == 2 ]]" "fail-count file"
run env STANDIN_FAIL_CREATE=2 "$DM" -s "$S" create -d none --url unix:///x f2
rc_is 1 "fail-create counts per name"
run env STANDIN_FAIL_CREATE=always "$DM" -s "$S" create -d none --url unix:///x f1x
rc_is 1 "fail-create always (1)"
run env STANDIN_FAIL_CREATE=always "$DM" -s "$S" create -d none --url unix:///x f1x
rc_is 1 "fail-create always (2)"
run env STANDIN_FAIL_CREATE=always STANDIN_FAIL_MATCH='^node-1$' "$DM" -s "$S" create -d none --url unix:///x node-2
rc_is 0 "fail-match spares other names"
run env STANDIN_FAIL_CREATE=always STANDIN_FAIL_MATCH='^node-1$' "$DM" -s "$S" create -d none --url unix:///x node-1
rc_is 1 "fail-match hits its name"

# ------------------------------------------------------------------ STANDIN_HALF_CREATE
run env STANDIN_HALF_CREATE=1 DIGITALOCEAN_ACCESS_TOKEN=t STANDIN_ENGINE_URL=unix:///e "$DM" -s "$S" create -d digitalocean h1
rc_is 1 "half-create fails"
err_has "Error in driver during machine creation: stand-in induced failure" "half-create fails"
check "[[ -s '$S/machines/h1/config.json' ]]" "half-create leaves config.json"
run dm ls --format '{{.Name}}|{{.State}}|{{.Error}}' --filter name=^h1$
out_has "h1|Error|stand-in induced failure" "ls shows the half-made machine in Error"
run dm status h1
out_is "Error" "status of a half-made machine"
run dm url h1
rc_is 1 "url of a half-made machine fails"
run dm inspect h1
rc_is 0 "inspect of a half-made machine"
run env STANDIN_HALF_CREATE=1 DIGITALOCEAN_ACCESS_TOKEN=t STANDIN_ENGINE_URL=unix:///e "$DM" -s "$S" create -d digitalocean h1
rc_is 1 "create over a half-made machine"
err_is 'Docker machine "h1" already exists' "create over a half-made machine"
run dm rm -y h1
rc_is 0 "rm -y of a half-made machine"
check "[[ ! -e '$S/machines/h1' ]]" "rm removed the half-made machine"
run env STANDIN_HALF_CREATE=1 DIGITALOCEAN_ACCESS_TOKEN=t STANDIN_ENGINE_URL=unix:///e "$DM" -s "$S" create -d digitalocean h1
rc_is 0 "create after the half-made machine was removed"

# ------------------------------------------------------------------ STANDIN_CREATE_DELAY_MS
start=$(date +%s%N)
run env STANDIN_CREATE_DELAY_MS=1200 "$DM" -s "$S" create -d none --url unix:///x d0
took=$((($(date +%s%N) - start) / 1000000))
rc_is 0 "delayed create"
check "(( took >= 1200 ))" "delayed create took ${took} ms (>= 1200)"
start=$(date +%s%N)
for n in d1 d2 d3; do
  env STANDIN_CREATE_DELAY_MS=1200 "$DM" -s "$S" create -d none --url unix:///x "$n" >/dev/null 2>&1 &
done
wait
took=$((($(date +%s%N) - start) / 1000000))
check "(( took >= 1200 && took < 3600 ))" "three delayed creates run in parallel (${took} ms < 3600)"
check "[[ -e '$S/machines/d1/config.json' && -e '$S/machines/d2/config.json' && -e '$S/machines/d3/config.json' ]]" "parallel creates all saved"

# a create killed in the middle leaves a half-made machine in Error
env STANDIN_CREATE_DELAY_MS=20000 "$DM" -s "$S" create -d none --url unix:///x k1 >/dev/null 2>&1 &
kpid=$!
for _ in $(seq 100); do [[ -e "$S/machines/k1/config.json" ]] && break; sleep 0.1; done
run dm status k1
out_is "Running" "the none driver never reports Starting, even while its create runs"
quiet_kill9 "$kpid"
run dm ls --format '{{.Name}}|{{.State}}' --filter name=^k1$
out_is "k1|Running" "a killed none create leaves a Running machine"

# ------------------------------------------------------------------ STANDIN_HANG
wait_for_file() {
  local _
  for _ in $(seq 100); do [[ -s "$1" ]] && return 0; sleep 0.1; done
  return 1
}
rm -f "$S/.standin/hang.pid" "$S/.standin/hang-child.pid"
env STANDIN_HANG=url "$DM" -s "$S" url m1 >"$T/hang.out" 2>&1 &
hpid=$!
check "wait_for_file '$S/.standin/hang-child.pid'" "hang writes hang-child.pid"
wait_for_file "$S/.standin/hang.pid"
child="$(cat "$S/.standin/hang-child.pid" 2>/dev/null)"
parent="$(cat "$S/.standin/hang.pid" 2>/dev/null)"
ORPHANS+=("$child")
check "[[ '$parent' == '$hpid' ]]" "hang.pid is the stand-in's pid"
check "[[ \"\$(tr '\\0' ' ' </proc/$child/cmdline)\" == 'sleep 3600 ' ]]" "hang child is sleep 3600"
check "[[ \"\$(awk '{print \$4}' /proc/$child/stat)\" == '$hpid' ]]" "hang child's parent is the stand-in"
sleep 1
check "kill -0 $hpid" "url still hanging after 1 s"
quiet_kill9 "$hpid"
sleep 0.2
check "kill -0 $child" "killing only the stand-in leaves the sleep orphaned"
kill "$child" 2>/dev/null

# killing the child lets the command finish normally
rm -f "$S/.standin/hang-child.pid"
env STANDIN_HANG=create,rm "$DM" -s "$S" create -d none --url unix:///x hc >"$T/hang2.out" 2>&1 &
hpid=$!
wait_for_file "$S/.standin/hang-child.pid"
child="$(cat "$S/.standin/hang-child.pid")"
ORPHANS+=("$child")
kill "$child"
wait "$hpid"
RC=$?
rc_is 0 "create finishes once its hang child is killed"
check "[[ -e '$S/machines/hc/config.json' ]]" "create after hang saved the machine"
for c in status inspect ls; do
  rm -f "$S/.standin/hang-child.pid"
  if [[ "$c" == ls ]]; then args=(ls -q); else args=("$c" m1); fi
  env STANDIN_HANG="$c" "$DM" -s "$S" "${args[@]}" >/dev/null 2>&1 &
  hpid=$!
  if wait_for_file "$S/.standin/hang-child.pid"; then
    child="$(cat "$S/.standin/hang-child.pid")"
    ORPHANS+=("$child")
    kill "$child"
    pass
  else
    fail "STANDIN_HANG=$c did not hang"
    kill "$hpid" 2>/dev/null
  fi
  wait "$hpid" 2>/dev/null
done
run env STANDIN_HANG=url STANDIN_FAIL_MATCH='^nomatch$' "$DM" -s "$S" url m1
rc_is 0 "STANDIN_FAIL_MATCH also scopes STANDIN_HANG"

# ------------------------------------------------------------------ store selection
S2="$T/store2"
run env MACHINE_STORAGE_PATH="$S2" "$DM" create -d none --url unix:///x e1
rc_is 0 "MACHINE_STORAGE_PATH selects the store"
check "[[ -e '$S2/machines/e1/config.json' ]]" "MACHINE_STORAGE_PATH store layout"
run "$DM" --storage-path="$S2" ls -q
out_is "e1" "--storage-path=PATH"
run "$DM" --storage-path "$S2" ls -q
out_is "e1" "--storage-path PATH"
run env MACHINE_STORAGE_PATH="$S2" "$DM" -s "$S" ls -q --filter name=^e1$
out_is "" "-s wins over MACHINE_STORAGE_PATH"
run env HOME="$T/home" "$DM" create -d none --url unix:///x h0
check "[[ -e '$T/home/.docker/machine/machines/h0/config.json' ]]" "default store is ~/.docker/machine"

# ================================================================== records outside the store
# From here on STANDIN_STATE_DIR holds the records (stores are throwaway temp dirs).
R="$T/state"
export STANDIN_STATE_DIR="$R"
# a store that already has its certificates (key generation is slow; s5 tests it)
seeded() { mkdir -p "$1/certs" && cp "$T/store/certs/"*.pem "$1/certs/"; }
S="$T/s3"
seeded "$S"
run dm create -d none --url "unix://$NOSOCK" r1
rc_is 0 "create with STANDIN_STATE_DIR"
check "[[ -s '$R/calls.log' && ! -e '$S/.standin' ]]" "calls.log goes to \$STANDIN_STATE_DIR, nothing under STORE/.standin"
run env STANDIN_FAIL_CREATE=1 "$DM" -s "$S" create -d none --url "unix://$NOSOCK" r2
check "[[ \"\$(cat '$R/fail-count-r2')\" == 1 ]]" "fail counter in \$STANDIN_STATE_DIR"
run env STANDIN_HALF_CREATE=1 "$DM" -s "$S" create -d none --url "unix://$NOSOCK" r3
check "[[ \"\$(cat '$R/half-count-r3')\" == 1 ]]" "half counter in \$STANDIN_STATE_DIR"
env STANDIN_HANG=status "$DM" -s "$S" status r1 >/dev/null 2>&1 &
hpid=$!
if wait_for_file "$R/hang-child.pid"; then
  child="$(cat "$R/hang-child.pid")"
  ORPHANS+=("$child")
  check "[[ \"\$(cat '$R/hang.pid')\" == '$hpid' ]] && grep -q \"^$child $hpid status\$\" '$R/hang-children'" "hang records in \$STANDIN_STATE_DIR"
  kill "$child"
else
  fail "STANDIN_HANG with STANDIN_STATE_DIR wrote no hang-child.pid"
  kill "$hpid"
fi
wait "$hpid" 2>/dev/null

# ------------------------------------------------------------------ broken store entries
mkdir -p "$S/machines/b1"
BROKEN="open $S/machines/b1/config.json: no such file or directory"
for c in status inspect url ip env config; do
  run dm "$c" b1
  rc_is 1 "$c on a machine dir without config.json"
  err_is "$BROKEN" "$c on a machine dir without config.json"
done
run dm rm -y b1
rc_is 1 "rm -y on a machine dir without config.json"
err_is "Error removing host \"b1\": $BROKEN" "rm -y on a machine dir without config.json"
check "[[ -d '$S/machines/b1' ]]" "rm -y cannot remove a broken entry"
run dm ls --format '{{.Name}}|{{.DriverName}}|{{.State}}|{{.URL}}|{{.Error}}' --filter name=^nothing-matches$
out_is "b1|not found|Error||$BROKEN" "ls lists a broken entry whatever the filter"
run dm create -d none --url "unix://$NOSOCK" b1
rc_is 1 "create over a broken entry"
err_is 'Docker machine "b1" already exists' "create over a broken entry"
mkdir -p "$S/machines/c1" "$S/machines/c2" "$S/machines/c3" "$S/machines/c4" "$S/machines/c5"
printf 'garbage' >"$S/machines/c1/config.json"
printf '{"ConfigVersion": 3, "Driver": {' >"$S/machines/c2/config.json"
printf '[1, 2]' >"$S/machines/c3/config.json"
printf '{"a" 1}' >"$S/machines/c4/config.json"
printf '{"ConfigVersion": 4}' >"$S/machines/c5/config.json"
i=0
for want in "invalid character 'g' looking for beginning of value" "unexpected end of JSON input" \
  "json: cannot unmarshal array into Go value of type host.MetadataV0" "invalid character '1' after object key" \
  "config version is from the future -- you should upgrade your Docker Machine client"; do
  i=$((i + 1))
  run dm status "c$i"
  rc_is 1 "status on corrupt config.json c$i"
  err_is "Error getting migrated host: $want" "status on corrupt config.json c$i"
done
run dm ls --format '{{.Name}}|{{.DriverName}}|{{.State}}|{{.Error}}' --filter name=^none$
check "grep -qx \"c1|not found|Error|Error getting migrated host: invalid character 'g' looking for beginning of value\" <<<\"\$OUT\"" "ls shows a corrupt entry"
run dm rm -f b1 c1 c2 c3 c4 c5
rc_is 0 "rm -f removes broken entries"
check "[[ ! -e '$S/machines/b1' && ! -e '$S/machines/c1' ]]" "rm -f removed broken entries"
TRACEBACKS=0
for c in "status" "env" "rm -y" "ls"; do
  mkdir -p "$S/machines/z1"; printf '{"ConfigVersion": 3, "Driver": [], "HostOptions": 7}' >"$S/machines/z1/config.json"
  # shellcheck disable=SC2086
  "$DM" -s "$S" $c z1 2>&1 | grep -q Traceback && TRACEBACKS=$((TRACEBACKS + 1))
done
check "(( TRACEBACKS == 0 ))" "no Python traceback on odd config.json"
rm -rf "$S/machines/z1"
# a current config.json whose Driver does not load (checked against the real 0.16.2)
mkdir -p "$S/machines/d1" "$S/machines/d2"
printf '{"ConfigVersion": 3, "DriverName": "none", "HostOptions": {"AuthOptions": {}}}' >"$S/machines/d1/config.json"
printf '{"ConfigVersion": 3, "DriverName": "none", "Driver": [], "HostOptions": {"AuthOptions": {}}}' >"$S/machines/d2/config.json"
for c in status url ip inspect env; do
  run dm $c d1
  rc_is 1 "$c on a config.json without Driver"
  err_is "unexpected end of JSON input" "$c on a config.json without Driver"
done
run dm status d2
err_is "json: cannot unmarshal array into Go value of type none.Driver" "status on a Driver of the wrong type"
run dm ls --format '{{.Name}}|{{.DriverName}}|{{.State}}|{{.URL}}|{{.Error}}'
rc_is 2 "ls panics closing a driver that did not load"
out_has "d1|not found|Error||unexpected end of JSON input" "ls lists the entry before it panics"
err_has "panic: runtime error: invalid memory address or nil pointer dereference" "ls panics closing a driver that did not load"
run dm rm -y d1
rc_is 1 "rm -y on a config.json without Driver"
err_is 'Error removing host "d1": unexpected end of JSON input' "rm -y on a config.json without Driver"
rm -rf "$S/machines/d1" "$S/machines/d2"

# ------------------------------------------------------------------ name claims are not atomic
S="$T/s4"
seeded "$S"
dm create -d none --url "unix://$NOSOCK" warm >/dev/null 2>&1
for i in 1 2 3 4; do
  (env STANDIN_CLAIM_BARRIER="$T/twin-barrier:4" "$DM" -s "$S" create -d none --url "unix://$NOSOCK.$i" twin >/dev/null 2>&1; echo $? >"$T/twin.$i") &
done
wait
check "[[ \"\$(cat '$T'/twin.*)\" == \"\$(printf '0\n0\n0\n0')\" ]]" "four concurrent creates of one name all exit 0"
# released together, their saves race (remove then rename): a loser gets the real error text
S="$T/s4b"
seeded "$S"
for i in 1 2 3 4; do
  (env STANDIN_CLAIM_BARRIER="$T/race-barrier:4:together" "$DM" -s "$S" create -d none --url "unix://$NOSOCK.$i" race >"$T/race-out.$i" 2>&1; echo $? >"$T/race.$i") &
done
wait
check "! grep -q 'already exists' '$T'/race-out.*" "creates released together all passed the name check"
check "grep -qx 0 '$T'/race.*" "a create released together succeeds"
SAVE_ERRORS="^(Error saving host to store before attempting creation|Error creating machine: Error saving host to store after attempting creation|Error attempting to save store): remove $S/machines/race/config.json: no such file or directory\$"
LOSERS_OK=1
for i in 1 2 3 4; do
  if [[ "$(cat "$T/race.$i")" != 0 ]] && ! grep -Eq "$SAVE_ERRORS" "$T/race-out.$i"; then LOSERS_OK=0; fi
done
check "(( LOSERS_OK == 1 ))" "a create that loses the save race prints docker-machine's error, not a traceback"

# ------------------------------------------------------------------ certificates
S="$T/s5"
run dm create -d none --url "unix://$NOSOCK" c1
out_has "Creating CA: $S/certs/ca.pem" "first create makes a CA"
out_has "Creating client certificate: $S/certs/cert.pem" "first create makes a client certificate"
check "openssl verify -CAfile '$S/certs/ca.pem' '$S/certs/cert.pem' >/dev/null 2>&1" "cert.pem verifies against ca.pem (real certificates)"
check "[[ \"\$(stat -c %a '$S' '$S/machines' '$S/machines/c1' '$S/certs' | sort -u)\" == 700 ]]" "the store, machines/, machines/NAME and certs/ are 0700"
# rm without -y asks; a closed stdin is no answer: nothing removed, exit 0
"$DM" -s "$S" rm c1 <&- >/dev/null 2>"$T/closed-stdin.err"
RC=$?
rc_is 0 "rm with stdin closed"
check "[[ -e '$S/machines/c1/config.json' && ! -s '$T/closed-stdin.err' ]]" "rm with stdin closed removes nothing and prints no error"
check "openssl x509 -in '$S/certs/cert.pem' -noout -ext extendedKeyUsage 2>/dev/null | grep -q 'TLS Web Client Authentication'" "cert.pem is a client certificate"
check "head -n1 '$S/certs/key.pem' | grep -q 'BEGIN RSA PRIVATE KEY' && head -n1 '$S/certs/ca-key.pem' | grep -q 'BEGIN RSA PRIVATE KEY'" "keys are PKCS#1 like docker-machine's"
# parallel first creates: a slow one overwrites the CA after a fast one signed cert.pem
S="$T/s6"
env STANDIN_CERT_DELAY_MS=4000 "$DM" -s "$S" create -d none --url "unix://$NOSOCK" slow >"$T/slow.out" 2>&1 &
spid=$!
# wait until the slow one is generating (a fixed sleep loses the race on a busy machine)
for _ in $(seq 1 200); do
  grep -q 'Creating CA: ' "$T/slow.out" 2>/dev/null && break
  sleep 0.05
done
run dm create -d none --url "unix://$NOSOCK" fast
wait "$spid"
check "grep -q 'Creating CA: ' '$T/slow.out'" "the slow first create generated a CA too"
out_has "Creating CA: $S/certs/ca.pem" "the fast first create generated a CA"
check "! openssl verify -CAfile '$S/certs/ca.pem' '$S/certs/cert.pem' >/dev/null 2>&1" "after the race cert.pem no longer verifies against ca.pem"
# --tls-* flags: existing certificates are used, nothing is generated
S="$T/s7"
TLS=(--tls-ca-cert "$T/s5/certs/ca.pem" --tls-ca-key "$T/s5/certs/ca-key.pem" --tls-client-cert "$T/s5/certs/cert.pem" --tls-client-key "$T/s5/certs/key.pem")
run "$DM" -s "$S" "${TLS[@]}" create -d none --url "unix://$NOSOCK" t1
rc_is 0 "create with --tls-* flags"
out_lacks "Creating CA" "--tls-* flags: no CA generated"
out_lacks "Creating client certificate" "--tls-* flags: no client certificate generated"
check "[[ ! -e '$S/certs/ca.pem' && ! -e '$S/certs/cert.pem' ]]" "--tls-* flags: nothing written to the store's certs"
json_all "$S/machines/t1/config.json" \
  "j['HostOptions']['AuthOptions']['CaCertPath']" "$T/s5/certs/ca.pem" \
  "j['HostOptions']['AuthOptions']['ClientKeyPath']" "$T/s5/certs/key.pem"

# ------------------------------------------------------------------ engines: a fake Docker engine on loopback
cat >"$T/engine.py" <<'PY'
import os, socket, ssl, sys, threading
kind, addr = sys.argv[1], sys.argv[2]
if kind == "unix":
    s = socket.socket(socket.AF_UNIX)
    s.bind(addr)
else:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    with open(addr + ".tmp", "w") as f:
        f.write(str(s.getsockname()[1]))
    os.rename(addr + ".tmp", addr)
s.listen(16)
ctx = None
if len(sys.argv) > 3:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(sys.argv[5])
def handle(c):
    try:
        if ctx:
            c = ctx.wrap_socket(c, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data:
            d = c.recv(4096)
            if not d:
                return
            data += d
        body = b'{"Version":"20.10.7","ApiVersion":"1.41"}'
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    except Exception:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
PY
S="$T/s5"
python3 "$T/engine.py" unix "$T/engine.sock" 2>/dev/null &
ORPHANS+=("$!")
check "wait_for_sock() { local _; for _ in \$(seq 50); do [[ -S '$T/engine.sock' ]] && return 0; sleep 0.1; done; return 1; }; wait_for_sock" "fake unix engine up"
dm create -d none --url "unix://$T/engine.sock" u1 >/dev/null 2>&1
run dm ls --format '{{.Name}}|{{.State}}|{{.DockerVersion}}|{{.Error}}' --filter name=^u1$
out_is "u1|Running|v20.10.7|" "ls asks a reachable unix engine for its version"

# ------------------------------------------------------------------ the simulated DigitalOcean account
: >"$R/plugin-children"
python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' >"$T/do.port"
DOPORT="$(cat "$T/do.port")"
DOENV=(env DIGITALOCEAN_ACCESS_TOKEN=tok STANDIN_ENGINE_URL="tcp://127.0.0.1:$DOPORT")
run "${DOENV[@]}" "$DM" -s "$S" create -d digitalocean do1
rc_is 0 "digitalocean create"
C="$R/cloud"
check "[[ -s '$C/do1.json' ]]" "the droplet shows in \$STANDIN_STATE_DIR/cloud"
json_is "$C/do1.json" "j['id'] == json.load(open('$S/machines/do1/config.json'))['Driver']['DropletID']" "True"
check "cmp -s '$C/do1.server.pem' '$S/machines/do1/server.pem'" "the VM serves the machine's server.pem"
check "openssl verify -CAfile '$S/certs/ca.pem' '$S/machines/do1/server.pem' >/dev/null 2>&1" "server.pem is signed by the store's CA"
check "openssl x509 -in '$S/machines/do1/server.pem' -noout -ext subjectAltName 2>/dev/null | grep -q 'IP Address:127.0.0.1'" "server.pem names the droplet's IP"
check "cmp -s '$S/machines/do1/ca.pem' '$S/certs/ca.pem' && cmp -s '$S/machines/do1/cert.pem' '$S/certs/cert.pem'" "provisioning copies the certs to the machine dir"
A="j['HostOptions']['AuthOptions']"
json_all "$S/machines/do1/config.json" \
  "$A['CertDir']" "$S/certs" "$A['CaCertPath']" "$S/certs/ca.pem" "$A['CaPrivateKeyPath']" "$S/certs/ca-key.pem" \
  "$A['ClientCertPath']" "$S/certs/cert.pem" "$A['ClientKeyPath']" "$S/certs/key.pem" \
  "$A['ServerCertPath']" "$S/machines/do1/server.pem" "$A['ServerKeyPath']" "$S/machines/do1/server-key.pem" \
  "$A['StorePath']" "$S/machines/do1"
gone_soon() { local _; for _ in $(seq 40); do kill -0 "$1" 2>/dev/null || return 0; [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" == Z ]] && return 0; sleep 0.05; done; return 1; }
check "[[ \$(wc -l <'$R/plugin-children') == 1 ]] && gone_soon \$(cat '$R/plugin-children')" "a successful create closes its plugin child"
# the VM's engine: TLS with the server cert, trusting the store's CA for clients
python3 "$T/engine.py" tcp "$T/do-engine.port" "$C/do1.server.pem" "$C/do1.server-key.pem" "$C/do1.ca.pem" 2>/dev/null &
ORPHANS+=("$!")
wait_for_file "$T/do-engine.port"
EPORT="$(cat "$T/do-engine.port")"
dm create -d none --url "tcp://127.0.0.1:$EPORT" n1 >/dev/null 2>&1
run dm env n1
rc_is 0 "env on a tcp:// engine whose certificate the store's CA signed"
out_is "$(printf '%s\n' 'export DOCKER_TLS_VERIFY="1"' "export DOCKER_HOST=\"tcp://127.0.0.1:$EPORT\"" "export DOCKER_CERT_PATH=\"$S/machines/n1\"" 'export DOCKER_MACHINE_NAME="n1"' '# Run this command to configure your shell: ' "# eval \$($DM -s $S env n1)")" "env output"
run dm config n1
rc_is 0 "config on a verified tcp:// engine"
out_is "$(printf '%s\n' --tlsverify "--tlscacert=\"$S/machines/n1/ca.pem\"" "--tlscert=\"$S/machines/n1/cert.pem\"" "--tlskey=\"$S/machines/n1/key.pem\"" "-H=tcp://127.0.0.1:$EPORT")" "config output"
run dm ls --format '{{.Name}}|{{.State}}|{{.DockerVersion}}|{{.Error}}' --filter name=^n1$
out_is "n1|Running|v20.10.7|" "ls: the TLS engine answers its version"
# a store whose CA did not sign the engine's certificate
S="$T/s6"
dm create -d none --url "tcp://127.0.0.1:$EPORT" n2 >/dev/null 2>&1
run dm env n2
rc_is 1 "env on an engine of another CA"
err_has "There was an error validating certificates for host \"127.0.0.1:$EPORT\": x509: certificate signed by unknown authority" "env on an engine of another CA"
run dm ls --format '{{.Name}}|{{.State}}|{{.Error}}' --filter name=^n2$
out_is "n2|Running|Unable to query docker version: Get \"https://127.0.0.1:$EPORT/v1.15/version\": x509: certificate signed by unknown authority" "ls on an engine of another CA"
S="$T/s5"
run dm rm -y do1
rc_is 0 "rm of a digitalocean machine"
check "[[ ! -e '$C/do1.json' && ! -e '$C/do1.server.pem' ]]" "rm deletes the droplet"
# a create killed before it saved the droplet's id leaves a droplet that rm cannot find
"${DOENV[@]}" STANDIN_DROPLET_IP_WAIT_MS=20000 "$DM" -s "$S" create -d digitalocean do2 >"$T/do2.out" 2>&1 &
kpid=$!
for _ in $(seq 100); do grep -q "Waiting for IP address" "$T/do2.out" && break; sleep 0.1; done
run dm status do2
rc_is 1 "status of a droplet whose id is not saved yet"
err_is "error getting state for host do2: GET https://api.digitalocean.com/v2/droplets/0: 404 The resource you were accessing could not be found." "status of a droplet whose id is not saved yet"
run dm ls --format '{{.Name}}|{{.DriverName}}|{{.State}}|{{.URL}}|{{.Error}}' --filter name=^do2$
out_is "do2|digitalocean|Error||GET https://api.digitalocean.com/v2/droplets/0: 404 The resource you were accessing could not be found." "ls of a droplet whose id is not saved yet"
quiet_kill9 "$kpid"
json_is "$S/machines/do2/config.json" "j['Driver']['DropletID']" "0"
run dm rm -y do2
rc_is 0 "rm of the killed create's machine"
out_has "(do2) Digital Ocean droplet doesn't exist, assuming it is already deleted" "rm cannot find the droplet"
check "[[ -s '$C/do2.json' ]]" "the droplet of a killed create keeps billing"
rm -f "$C"/do2.*
# half-made droplets are saved with their id: rm cleans them up
run env STANDIN_HALF_CREATE=1 "${DOENV[@]}" "$DM" -s "$S" create -d digitalocean do3
rc_is 1 "half-made droplet"
check "[[ -s '$C/do3.json' ]]" "a half-made droplet bills"
run dm rm -y do3
check "[[ ! -e '$C/do3.json' ]]" "rm deletes a half-made droplet"
check "[[ -z \"\$(ls '$C')\" ]]" "nothing left billing"

# ------------------------------------------------------------------ SIGPIPE: a create whose parent died
cat >"$T/pipe.py" <<'PY'
import subprocess, sys, time
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
while b"Creating machine..." not in p.stdout.readline():
    pass
p.stdout.close()
p.stderr.close()
start = time.time()
rc = p.wait()
print(rc, int((time.time() - start) * 1000))
PY
read -r prc pms < <(env STANDIN_CREATE_DELAY_MS=800 python3 "$T/pipe.py" "$DM" -s "$S" create -d none --url "unix://$NOSOCK" sp1)
check "[[ '$prc' == -13 ]]" "a create whose pipes closed is killed by SIGPIPE (got $prc)"
check "(( pms >= 600 && pms < 5000 ))" "it dies at its next output line, after the delay (${pms} ms)"

# ------------------------------------------------------------------ the plugin child lingers after a failed create
: >"$R/plugin-children"
# alive = exists and is no zombie (an orphan's parent may be slow to reap it)
alive() { [[ -e "/proc/$1/stat" && "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
setsid env STANDIN_PLUGIN_LINGER_MS=1000 STANDIN_FAIL_CREATE=1 "${DOENV[@]}" "$DM" -s "$S" create -d digitalocean pl1 >/dev/null 2>&1 &
lpid=$!
wait "$lpid"
sleep 0.2
plug="$(head -n1 "$R/plugin-children")"
ORPHANS+=("$plug")
check "[[ -n '$plug' ]] && alive '$plug'" "the plugin child outlives a failed create"
check "[[ \"\$(awk '{print \$5}' /proc/$plug/stat 2>/dev/null)\" == '$lpid' ]]" "the plugin child is in the create's process group"
check "[[ \"\$(tr '\\0' ' ' </proc/$plug/cmdline)\" == *docker-machine-driver-digitalocean* ]]" "the plugin child is docker-machine-driver-digitalocean"
sleep 1
check "gone_soon '$plug'" "the plugin child is gone after STANDIN_PLUGIN_LINGER_MS"
: >"$R/plugin-children"
run env STANDIN_PLUGIN_LINGER_MS=5000 "$DM" -s "$S" create -d none "pl2"
plug="$(head -n1 "$R/plugin-children")"
ORPHANS+=("$plug")
check "alive '$plug'" "the none driver's plugin lingers too (after a usage failure)"
kill "$plug" 2>/dev/null

# ------------------------------------------------------------------ crash reports (never sent, recorded)
B="$R/bugsnag-would-send.log"
rm -f "$B"
run env STANDIN_FAIL_CREATE=1 "$DM" -s "$S" create -d none --url "unix://$NOSOCK" bs1
check "[[ \$(wc -l <'$B') == 1 ]] && grep -q '\"name\": \"bs1\"' '$B'" "a failed create would send a crash report"
json_is "$B" "j['argv'][-1]" "bs1"
run env STANDIN_FAIL_CREATE=1 MACHINE_BUGSNAG_API_TOKEN=no-report "$DM" -s "$S" create -d none --url "unix://$NOSOCK" bs2
run env STANDIN_FAIL_CREATE=1 "$DM" -s "$S" --bugsnag-api-token no-report create -d none --url "unix://$NOSOCK" bs3
touch "$S/no-error-report"
run env STANDIN_FAIL_CREATE=1 "$DM" -s "$S" create -d none --url "unix://$NOSOCK" bs4
rm -f "$S/no-error-report"
run dm create -d none --url "unix://$NOSOCK" 'bad_name!'
rc_is 1 "an invalid name is no crash"
check "[[ \$(wc -l <'$B') == 1 ]]" "no report with MACHINE_BUGSNAG_API_TOKEN=no-report, --bugsnag-api-token no-report, <store>/no-error-report, or a non-crash error"
# ------------------------------------------------------------------ spans: calls running at once
SP="$R/spans.log"
rm -f "$SP"
S="$T/s9"
seeded "$S"
pids=()
for n in 1 2 3; do
  env STANDIN_CREATE_DELAY_MS=1500 "$DM" -s "$S" create -d none --url "unix://$NOSOCK" "ov$n" >/dev/null 2>&1 &
  pids+=($!)
  sleep 0.2
done
# killed in its delay: its marker is freed by the kernel, without an `end` record
env STANDIN_CREATE_DELAY_MS=60000 "$DM" -s "$S" create -d none --url "unix://$NOSOCK" ov4 >/dev/null 2>&1 &
k=$!
wait "${pids[@]}"
kill -9 "$k" 2>/dev/null
wait "$k" 2>/dev/null
run dm create -d none --url "unix://$NOSOCK" ov5
run dm rm -y ov5
spans() { python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print($1)" "$SP"; }
check "[[ \"\$(spans \"[x['running'] for x in r if x['event']=='start' and x['command']=='create' and x['argv'][-1] in ('ov2','ov3','ov4')]\")\" == '[2, 3, 4]' ]]" "spans.log counts the creates running at each start"
check "[[ \"\$(spans \"[x['running'] for x in r if x['event']=='start' and x['argv'][-1]=='ov5']\")\" == '[1, 1]' ]]" "a killed create stops counting; rm is counted apart from create"
check "[[ \"\$(spans \"sorted(x['exit'] for x in r if x['event']=='end' and x['command']=='create')\")\" == '[0, 0, 0, 0]' ]]" "spans.log ends every call that returned, not the killed one"
unset STANDIN_STATE_DIR

printf '%d passed, %d failed\n' "$PASS" "$FAILED"
[[ "$FAILED" -eq 0 ]]
