//! The LUKS type names do not clash with each other or with qcow2's: a glob import of every
//! module (what a crate prelude would re-export) leaves each name unambiguous. A clash is a
//! compile error here (E0659, ambiguous name).
#![allow(unused_imports)]

use qluks::luks::luks1::*;
use qluks::luks::luks2::*;
use qluks::luks::*;
use qluks::qcow2::*;

#[test]
fn luks_and_qcow2_names_are_unambiguous_under_glob_imports() {
    let names = [
        core::any::type_name::<LuksError>(),
        core::any::type_name::<LuksIoError<()>>(),
        core::any::type_name::<Luks2Error>(),
        core::any::type_name::<Luks2CopyError>(),
        core::any::type_name::<DataSegment>(),
        core::any::type_name::<Luks2Segment>(),
        core::any::type_name::<Luks1Keyslot>(),
        core::any::type_name::<Luks2Keyslot>(),
        core::any::type_name::<Luks1Header>(),
        core::any::type_name::<Luks2Header>(),
        core::any::type_name::<Luks2Digest>(),
        core::any::type_name::<Header>(),
        core::any::type_name::<HeaderError>(),
        core::any::type_name::<Error<()>>(),
    ];
    assert!(names[0].ends_with("luks::error::LuksError"));
    assert!(names[11].contains("qcow2"), "{}", names[11]);
    assert!(names[12].contains("qcow2"), "{}", names[12]);
    assert!(names[13].contains("qcow2"), "{}", names[13]);
}
