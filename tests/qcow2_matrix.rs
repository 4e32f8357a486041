//! The qcow2 interoperability matrix, QEMU's side: every image of issue 4's matrix is generated
//! with qemu-img/qemu-io and what QEMU reads from it is recorded. qluks's side (raw conversion
//! byte-identical, map agreeing) is checked for each image in the same pass.
mod common;
mod matrix;

#[test]
fn matrix_images_read_like_qemu() {
    let t = "matrix_images_read_like_qemu";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let start = std::time::Instant::now();
    let cases = matrix::build(dir.path());
    println!("generated {} images in {:?}", cases.len(), start.elapsed());
    for case in &cases {
        let raw = case.qemu_raw(dir.path());
        let map = case.qemu_map();
        matrix::check_generated(case, &map, &raw);
    }
    println!("matrix done in {:?}", start.elapsed());
}
