//! kata's macvtap internetworking model (being written).
