//! In-process simulators of Marathon, Consul, Kong and Vulcand that speak the
//! real wire formats (see `docs/marathon.md` and `docs/backends.md`). The test suite and
//! `switchboard demo` both use them. Each binds `127.0.0.1:0` and reports its
//! address; none ever talks to anything but loopback.

pub mod cluster;
pub mod consul;
pub mod consul_kv;
pub mod kong;
pub mod marathon;
pub mod scenario;
pub mod tap;
pub mod vulcand;
