//! The baseline of `bench/upload.sh`: writes a file to a store directly with object_store
//! (multipart, 8 MiB parts, 4 in flight: what the gateway's upload path does), and prints the
//! seconds it took. Usage: direct_write STORE_URL FILE [ENDPOINT] [KEY=VALUE ...]

use std::time::Instant;

use object_store::path::Path;
use object_store::{ObjectStoreExt as _, WriteMultipart};
use registry::storage::{Storage, StorageConfig};
use tokio::io::AsyncReadExt as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url =
        args.next().ok_or_else(|| anyhow::anyhow!("usage: direct_write STORE_URL FILE [ENDPOINT] [KEY=VALUE ...]"))?;
    let file = args.next().ok_or_else(|| anyhow::anyhow!("missing FILE"))?;
    let endpoint = args.next().filter(|e| !e.is_empty());
    let options = args.filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect();
    let store = Storage::open(&StorageConfig { url, endpoint, options, ..StorageConfig::default() })?.object_store();
    let location = Path::from("bench/direct-write");
    let started = Instant::now();
    let mut writer = WriteMultipart::new_with_chunk_size(store.put_multipart(&location).await?, 8 * 1024 * 1024);
    let mut input = tokio::fs::File::open(&file).await?;
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        writer.wait_for_capacity(4).await?;
        writer.write(&buf[..n]);
    }
    writer.finish().await?;
    println!("{:.3}", started.elapsed().as_secs_f64());
    store.delete(&location).await?;
    Ok(())
}
