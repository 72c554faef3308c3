//! Kong backend tests against the simulator.
