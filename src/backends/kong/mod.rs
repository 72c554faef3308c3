//! (stub) kong backend
