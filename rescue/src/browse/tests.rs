//! Tests of the readers against filesystems made by the real tools at test time (`util` makes the
//! source tree and compares), and against damaged ones (`damage`).

mod damage;
mod exfat;
mod ext;
mod fat;
mod ntfs;
mod util;
