#!/usr/bin/env bash
# Runs every libFuzzer target of certroll for SECONDS each (default 60) and prints the number of
# executions per target. Crashes, hangs and OOMs are kept under fuzz/artifacts/TARGET/.
#
#   fuzz/run.sh 600                 # every target, 10 minutes each, one after another
#   JOBS=2 fuzz/run.sh 600          # two targets at a time
#   fuzz/run.sh 60 plan subject     # only these targets
#
# Only the stable toolchain is needed: libfuzzer-sys builds libFuzzer itself, and the coverage
# instrumentation cargo-fuzz would add with `--sanitizer none` is passed here as RUSTFLAGS
# (stable codegen options). There is no AddressSanitizer (it needs nightly's -Zsanitizer); Rust's
# own bounds checks, debug assertions and overflow checks stand in for it.
set -euo pipefail

secs=${1:-60}
shift || true
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
all=(plan subject san import merge restore)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
jobs=${JOBS:-1}
triple=$(rustc -vV | sed -n 's/^host: //p')

export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps the instrumentation out of build scripts and proc-macros.
nice -n 19 cargo build --release --manifest-path "$here/Cargo.toml" --target "$triple" --bins
bin="$here/target/$triple/release"

# Seeds: the committed ones, the plan fixtures, and files certroll reads made fresh with openssl.
seeds() {
    local t=$1 c="$here/corpus/$1"
    mkdir -p "$c"
    if [ -d "$here/seeds/$t" ]; then cp -n "$here/seeds/$t"/* "$c"/ 2>/dev/null || true; fi
    local g="$here/target/seedgen"
    mkdir -p "$g"
    case $t in
    plan | san)
        for f in "$root"/tests/fixtures/plans/*.toml "$root"/examples/*.toml; do
            [ -f "$f" ] && cp -n "$f" "$c/$(basename "$f")"
        done
        if [ "$t" = plan ]; then
            { cat "$root/tests/fixtures/plans/full.toml" | sed 's/cameras.txt/ids.txt/'; printf '\0'
              cat "$root/tests/fixtures/plans/cameras.txt"; } >"$c/full-with-ids"
        fi
        ;;
    subject)
        printf 'CN=Example Root CA, O=Example, C=KR' >"$c/s1"
        printf 'CN=a\\, b; OU=x\\;y, L=Seoul, ST=Seoul' >"$c/s2"
        ;;
    import | merge | restore)
        if [ ! -f "$g/ec.pem" ]; then
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
                -subj "/CN=fuzz-ca/O=Example" -addext "subjectAltName=DNS:a.example,IP:10.0.0.1" \
                -keyout "$g/ec.key" -out "$g/ec.pem" 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -subj "/CN=fuzz-leaf" -keyout "$g/rsa.key" \
                -out "$g/rsa.csr" 2>/dev/null
            openssl x509 -req -in "$g/rsa.csr" -CA "$g/ec.pem" -CAkey "$g/ec.key" -days 30 \
                -set_serial 7 -out "$g/rsa.pem" 2>/dev/null
            openssl pkey -in "$g/rsa.key" -traditional -out "$g/rsa-pkcs1.key" 2>/dev/null
            openssl ec -in "$g/ec.key" -out "$g/ec-sec1.key" 2>/dev/null
        fi
        case $t in
        import)
            cat "$g/ec.pem" "$g/ec.key" >"$c/ec-cert-key.pem"
            cat "$g/ec-sec1.key" "$g/ec.pem" >"$c/ec-key-cert.pem"
            cat "$g/rsa-pkcs1.key" "$g/rsa.pem" "$g/ec.pem" >"$c/rsa-chain.pem"
            openssl pkcs12 -export -inkey "$g/rsa.key" -in "$g/rsa.pem" -certfile "$g/ec.pem" \
                -passout pass:fuzz-password -out "$c/rsa.pfx"
            openssl pkcs12 -export -inkey "$g/ec.key" -in "$g/ec.pem" -legacy \
                -passout pass:fuzz-password -out "$c/ec-legacy.pfx" 2>/dev/null || true
            openssl x509 -in "$g/ec.pem" -outform DER -out "$c/ec.der"
            ;;
        merge)
            cat "$g/rsa.pem" "$g/ec.pem" >"$c/chain.pem"
            openssl x509 -in "$g/rsa.pem" -outform DER -out "$c/leaf.der"
            openssl crl2pkcs7 -nocrl -certfile "$g/rsa.pem" -certfile "$g/ec.pem" -out "$c/chain.p7b"
            openssl crl2pkcs7 -nocrl -certfile "$g/rsa.pem" -outform DER -out "$c/leaf.p7b.der"
            ;;
        restore)
            python3 "$here/make_backup_seed.py" "$g/rsa.pem" "$g/rsa.key" "$g/ec.pem" "$c"
            ;;
        esac
        ;;
    esac
}

mkdir -p "$here/artifacts"
run() {
    local t=$1
    seeds "$t"
    mkdir -p "$here/artifacts/$t"
    local log="$here/artifacts/$t.log" stamp="$here/artifacts/$t.start"
    touch "$stamp"
    # -timeout: an input taking 10 s is a hang; -rss_limit_mb: an OOM.
    nice -n 19 "$bin/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$here/artifacts/$t/" \
        "$here/corpus/$t" >"$log" 2>&1 || true
    local execs crashes took
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    # libFuzzer stops at the first crash, so say how long it actually ran.
    took=$(( $(date +%s) - $(stat -c %Y "$stamp") ))
    crashes=$(find "$here/artifacts/$t" -type f -newer "$stamp" | wc -l)
    printf '%-8s %10s executions in %ss, %s new artifact(s)%s\n' "$t" "${execs:-?}" "$took" "$crashes" \
        "$(grep -m1 -E 'panicked|ERROR: libFuzzer' "$log" | sed 's/^/: /' || true)"
}

running=0
for t in "${targets[@]}"; do
    run "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait
n=$(find "$here/artifacts" -mindepth 2 -type f | wc -l)
echo "artifacts: $n under fuzz/artifacts (logs: fuzz/artifacts/TARGET.log)"
[ "$n" -eq 0 ]
