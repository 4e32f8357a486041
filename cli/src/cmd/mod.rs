//! One module per command (`qluks VERB`); the pieces commands share (opening images,
//! secrets, image options, JSON models, sizes, escaping) live beside `cmd/`, each in one place.

pub mod amend;
pub mod bench;
pub mod check;
pub mod commit;
pub mod compare;
pub mod convert;
pub mod create;
pub mod dd;
pub mod demo;
pub mod info;
pub mod io;
pub mod luks;
pub mod map;
pub mod measure;
pub mod rebase;
pub mod resize;
pub mod snapshot;
