#!/usr/bin/env bash
# The container image in CI (called by .ci/run after the release build): no registry but Debian's is
# reachable, so the Dockerfile's base images cannot be pulled. Instead:
#   1. debootstrap makes a minimal Debian bookworm root file system from Debian's packages and buildah
#      imports it as the local image localhost/debian:bookworm-debootstrap;
#   2. the Dockerfile's runtime stage (everything from `FROM ... AS runtime`, unchanged but for its base
#      and the binary's source) is built on it with the release binary cargo just built;
#   3. `switchboard --version`, `switchboard probe` and `switchboard demo` run inside the image, as the
#      image's user, and the image's configuration (user, volume, port, labels, health check) is checked;
#   4. the Debian package, when .ci/run built one, is installed on the same base.
# Exit 0 when the image was built and the demo converged in it, or when this machine cannot run buildah
# (then it says why, "SKIPPED: ..."); non-zero when the image or the demo is wrong.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "SKIPPED: container image: $*" >&2; exit 0; }
[ -x target/release/switchboard ] || { echo "target/release/switchboard is missing: build it first" >&2; exit 1; }

need=()
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
    || skip "could not install ${need[*]} from Debian"
fi

# Rootful buildah with its default storage, RUN steps in a chroot
# (no container runtime or user namespaces needed).
export BUILDAH_ISOLATION=chroot
work=$(mktemp -d)
ctr=""
cleanup() {
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

base=localhost/debian:bookworm-debootstrap
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  echo "image: debootstrap of Debian bookworm (minbase)"
  debootstrap --variant=minbase bookworm "$work/rootfs" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; skip "debootstrap could not build a Debian root file system here"; }
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  scratch=$(buildah from scratch 2>"$work/err") || { cat "$work/err" >&2; skip "buildah cannot create a container here"; }
  mnt=$(buildah mount "$scratch" 2>"$work/err") || { cat "$work/err" >&2; buildah rm "$scratch" >/dev/null; skip "buildah cannot mount a container here"; }
  cp -a "$work/rootfs/." "$mnt/"
  buildah umount "$scratch" >/dev/null
  buildah commit -q "$scratch" "$base" >/dev/null
  buildah rm "$scratch" >/dev/null
  rm -rf "$work/rootfs"
fi

# The runtime stage of the Dockerfile, on the local base, with the binary from the build context.
ctx="$work/ctx"
mkdir -p "$ctx"
cp target/release/switchboard "$ctx/switchboard"
awk '/^FROM .* AS runtime$/{on=1} on' Dockerfile \
  | sed -e "s#^FROM .* AS runtime\$#FROM $base AS runtime#" \
        -e 's#^COPY --from=build /switchboard #COPY switchboard #' > "$ctx/Dockerfile"
grep -q "^FROM $base AS runtime\$" "$ctx/Dockerfile" && grep -q '^COPY switchboard ' "$ctx/Dockerfile" \
  || { echo "Dockerfile: no runtime stage or binary COPY to build from" >&2; exit 1; }
commit=$(./target/release/switchboard --version | sed -n 's/.*(commit \(.*\))$/\1/p')
echo "image: building the runtime stage on $base"
buildah rmi localhost/switchboard:ci >/dev/null 2>&1 || true  # the previous run's, so none piles up
buildah bud --quiet --layers=false --format docker -f "$ctx/Dockerfile" \
  --build-arg SWITCHBOARD_GIT_COMMIT="$commit" -t localhost/switchboard:ci "$ctx" >/dev/null

# What the image says about itself.
buildah inspect --type image localhost/switchboard:ci > "$work/inspect.json"
python3 - "$work/inspect.json" "$commit" <<'PY' || exit 1
import json, sys
c = json.load(open(sys.argv[1]))
oci = c["OCIv1"]["config"]
docker = c["Docker"]["config"]
assert oci["User"] == "10001:10001", oci["User"]
assert "/var/lib/switchboard" in oci["Volumes"], oci.get("Volumes")
assert "9102/tcp" in oci["ExposedPorts"], oci.get("ExposedPorts")
assert oci["Entrypoint"] == ["/usr/local/bin/switchboard"], oci["Entrypoint"]
assert "SWITCHBOARD_LISTEN=0.0.0.0:9102" in oci["Env"], oci["Env"]
labels = oci["Labels"]
for k in ("title", "description", "version", "revision", "licenses"):
    assert labels.get(f"org.opencontainers.image.{k}"), (k, labels)
assert labels["org.opencontainers.image.revision"] == sys.argv[2], labels
hc = docker.get("Healthcheck", {}).get("Test", [])
assert hc[:3] == ["CMD", "/usr/local/bin/switchboard", "probe"], hc
print("image: user, volume, port, entrypoint, OCI labels and health check as the Dockerfile says")
PY

ctr=$(buildah from localhost/switchboard:ci)
buildah run --user 10001:10001 "$ctr" -- /usr/local/bin/switchboard --version
# The health check's command with nothing listening: it must fail, with its reason.
if buildah run --user 10001:10001 "$ctr" -- /usr/local/bin/switchboard probe --timeout 2s http://127.0.0.1:9/health; then
  echo "switchboard probe succeeded against a closed port" >&2
  exit 1
fi
echo "image: switchboard probe failed against a closed port, with its reason, as it must"
echo "image: switchboard demo inside the image, as user 10001"
timeout 300 buildah run --user 10001:10001 "$ctr" -- /usr/local/bin/switchboard demo >"$work/demo.log" 2>&1 \
  || { tail -n 40 "$work/demo.log" >&2; echo "switchboard demo failed inside the image" >&2; exit 1; }
tail -n 3 "$work/demo.log"
echo "image: localhost/switchboard:ci built; the demo converged inside it"

# The Debian package (when .ci/run built one) installs on plain Debian bookworm: the binary, the unit and
# the `switchboard` system user.
deb=$(ls target/debian/switchboard_*.deb 2>/dev/null | head -n 1 || true)
if [ -n "$deb" ]; then
  buildah rm "$ctr" >/dev/null
  ctr=$(buildah from "$base")
  buildah copy "$ctr" "$deb" /tmp/switchboard.deb >/dev/null
  buildah run "$ctr" -- sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/switchboard.deb' \
    >"$work/deb.log" 2>&1 || { tail -n 20 "$work/deb.log" >&2; echo "$deb does not install on Debian bookworm" >&2; exit 1; }
  buildah run "$ctr" -- sh -c 'getent passwd switchboard >/dev/null && test -f /usr/lib/systemd/system/switchboard.service && switchboard --version' \
    || { echo "$deb installed without its user, unit or binary" >&2; exit 1; }
  echo "debian package: $deb installs on Debian bookworm (binary, unit, switchboard user)"
fi
