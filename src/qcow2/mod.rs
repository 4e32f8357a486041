//! qcow2 images (formats.md §1-§4).

pub mod compressed;
