//! IGVM file loading (to be written).
