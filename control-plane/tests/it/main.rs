//! Multi-process store tests: real `skiff-control-plane` processes on 127.0.0.1,
//! killed with SIGKILL and restarted from their data directories.

mod cluster;
mod faults;
