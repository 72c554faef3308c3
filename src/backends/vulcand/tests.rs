//! Vulcand backend tests against the simulator.
