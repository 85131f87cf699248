//! Callers masked by role: the rules live in [`crate::records::mask`], beside the
//! service, which masks pattern hits over gRPC by the same setting.

pub use crate::records::mask::{
    mask_name, mask_number, masked_roles, masks_callers, DEFAULT_MASKED_ROLES,
};
