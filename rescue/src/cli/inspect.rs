//! `rescue inspect`: what an image holds (`ops::inspect`), as text or JSON.

use std::path::Path;

use serde_json::json;

use crate::ops;
use crate::units::human_size;

pub fn inspect(
    image_path: &Path,
    json_out: bool,
    net: &super::imaging::NetArgs,
) -> anyhow::Result<i32> {
    let location = ops::Location::parse(&image_path.to_string_lossy())?;
    let net = net.options(&location)?;
    if let Some(v) = ops::inspect_virtual(&location, &net)? {
        return virtual_disk(&location, &v, json_out);
    }
    let info = ops::inspect(&location, &net)?;
    // As the image is shown: without a password.
    let shown = location.to_string();
    let file_len = info.image_bytes;
    let used = info.used_bytes;
    let d = &info.disk;
    let creation = &info.creation;
    let value = json!({
        "image": shown,
        "image_bytes": file_len,
        "root_hash": info.root_hash,
        "created_unix": creation.created_unix,
        "host": creation.host_name,
        "tool": format!("{} {}", creation.tool_name, creation.tool_version),
        "source": {"path": d.path, "model": d.model, "serial": d.serial, "transport": d.transport, "size_bytes": d.size,
                   "logical_sector_size": d.logical_sector_size, "physical_sector_size": d.physical_sector_size,
                   "table": format!("{:?}", d.table_kind).to_lowercase(), "table_id": d.table_id},
        "partitions": d.partitions.iter().map(|p| json!({"number": p.number, "start_bytes": p.start, "size_bytes": p.size,
            "type": p.type_id, "name": p.name, "fs": p.fs_kind, "fs_label": p.fs_label, "fs_uuid": p.fs_uuid})).collect::<Vec<_>>(),
        "streams": info.streams.iter().map(|s| json!({"label": s.label,
            "disk_offset": s.disk_offset, "length": s.length, "used_bytes": s.used_bytes,
            "stored_bytes": s.stored_bytes, "shared_bytes": s.shared_bytes,
            "capture": s.capture, "reason": s.reason})).collect::<Vec<_>>(),
        "used_bytes": used,
        "repeated_bytes": info.repeated_bytes,
        "format": info.format,
        "required_features": info.required_features,
        "ratio": if file_len > 0 { used as f64 / file_len as f64 } else { 0.0 },
        "unreadable": info.unreadable.iter().map(|(s, r)| json!({"stream": s, "start": r.start, "end": r.end})).collect::<Vec<_>>(),
        "unallocated": info.unallocated.iter().map(|r| json!({"start": r.start, "end": r.end})).collect::<Vec<_>>(),
        "notes": creation.notes,
    });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    println!("image       {} ({})", shown, human_size(file_len));
    println!("root hash   {}", info.root_hash);
    println!(
        "created     {}{} by {} {}",
        crate::store::date_time(u64::try_from(creation.created_unix).unwrap_or(0)),
        crate::store::on_host(&creation.host_name),
        creation.tool_name,
        creation.tool_version
    );
    println!(
        "source      {} {} {} ({}, {}, {}-byte sectors, {})",
        d.path,
        d.model,
        d.serial,
        human_size(d.size),
        d.transport,
        d.logical_sector_size,
        d.table_kind.describe()
    );
    println!(
        "used        {} stored in {} (ratio {:.2})",
        human_size(used),
        human_size(file_len),
        if file_len > 0 {
            used as f64 / file_len as f64
        } else {
            0.0
        }
    );
    println!(
        "repeated    {} found more than once, stored once (format {})",
        human_size(info.repeated_bytes),
        info.format
    );
    println!("partitions of the source (* captured):");
    for p in &d.partitions {
        let captured = info.streams.iter().any(|s| s.partition == Some(p.number));
        println!(
            "  {} {:<3} at {:>12}  {:>10}  {:<8} {:<12} {}",
            if captured { "*" } else { " " },
            p.number,
            p.start,
            human_size(p.size),
            if p.fs_kind.is_empty() {
                "-"
            } else {
                &p.fs_kind
            },
            p.fs_label,
            if p.name.is_empty() {
                &p.type_id
            } else {
                &p.name
            },
        );
    }
    println!(
        "streams (stored: bytes of the image file written for it; shared: its data stored once for"
    );
    println!("an earlier stream):");
    for s in &info.streams {
        let shared = if s.shared_bytes > 0 {
            format!(", {} shared", human_size(s.shared_bytes))
        } else {
            String::new()
        };
        println!(
            "  {:<28} at {:>12}  {:>10} used of {:>10}, {:>10} stored{shared}  {}",
            s.label,
            s.disk_offset,
            human_size(s.used_bytes),
            human_size(s.length),
            human_size(s.stored_bytes),
            s.reason
        );
    }
    for (s, r) in &info.unreadable {
        println!(
            "unreadable  {}",
            json!({"stream": s, "start": r.start, "end": r.end})
        );
    }
    for r in &info.unallocated {
        println!(
            "unallocated bytes {}..{} ({}): not captured; a restore leaves them as they are",
            r.start,
            r.end,
            human_size(r.end - r.start)
        );
    }
    for n in &creation.notes {
        println!("note        {n}");
    }
    Ok(0)
}

/// A virtual machine's disk: its format, what the format says, and the disk it holds.
fn virtual_disk(
    location: &ops::Location,
    v: &ops::VirtualInfo,
    json_out: bool,
) -> anyhow::Result<i32> {
    if json_out {
        let value = json!({
            "image": location.to_string(),
            "virtual_disk": {"format": v.format, "file_bytes": v.file_bytes, "notes": v.notes},
            "disk": v.disk,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    println!(
        "virtual disk {} ({}, {} file)",
        location,
        v.format,
        human_size(v.file_bytes)
    );
    for n in &v.notes {
        println!("  {n}");
    }
    println!("holds a disk of {}:", human_size(v.disk.size_bytes));
    let report = crate::detect::Report {
        disks: vec![v.disk.clone()],
        problems: Vec::new(),
    };
    print!("{}", super::render_report(&report));
    println!(
        "It can be restored onto a disk (rescue restore), captured (rescue capture), verified, and exported \
         to another format (rescue export --format)."
    );
    Ok(0)
}
