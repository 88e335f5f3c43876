//! Attachments: encrypted and uploaded to the SDS, sent as a reference in an
//! MLS message, downloaded and checked by the recipients.

use super::*;
use mlsd_transport::protocol::tickets::TicketKind;

impl Client {
    /// Encrypts a file with a fresh key, uploads it to the SDS and sends its
    /// reference (id, key, name, size, hash) as an application message.
    pub async fn send_file(
        &mut self,
        name: &str,
        path: &std::path::Path,
    ) -> Result<u32, ClientError> {
        let req = self.prepare_file(name, path).await?;
        sent_copies(self.send_request(req).await?)
    }

    /// Uploads the file and prepares the `Send` that announces it.
    pub async fn prepare_file(
        &mut self,
        name: &str,
        path: &std::path::Path,
    ) -> Result<Request, ClientError> {
        let _ = self.check_members(name).await;
        self.refuse_unverified(&self.group_meta(name)?.id, name)?;
        let data = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| ClientError::Home(format!("{}: {e}", path.display())))?,
        );
        if data.len() as u64 > MAX_FILE {
            return Err(ClientError::Home(format!(
                "{} is larger than {MAX_FILE} bytes",
                path.display()
            )));
        }
        let id = random32();
        let key = Zeroizing::new(random32());
        let cap = Zeroizing::new(random32());
        let sealed = crate::blob::seal(&key, &id, &data)?;
        let tickets =
            self.take_tickets(TicketKind::Blob, crate::blob::chunks(sealed.len())).await?;
        crate::blob::put(&self.conn, id, *cap, &sealed, tickets).await?;
        let file = FileRef {
            id,
            key,
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into()),
            size: data.len() as u64,
            sha256: sha256(&data),
        };
        self.prepare_payload(name, &Payload::File(file))
    }

    pub(super) async fn download(
        &self,
        group: String,
        sender: String,
        file: FileRef,
    ) -> Result<Event, ClientError> {
        let sealed = crate::blob::get(&self.conn, file.id, MAX_FILE + 64).await?;
        let plain = crate::blob::open(&file.key, &file.id, &sealed)?;
        if sha256(&plain) != file.sha256 || plain.len() as u64 != file.size {
            return Err(ClientError::Crypto(format!("file {} does not match its hash", file.name)));
        }
        let dir = self.home.dir().join("files");
        std::fs::create_dir_all(&dir).map_err(|e| ClientError::Home(e.to_string()))?;
        // Only the last path component of the sender's name, never a path,
        // and nothing in it that a terminal would act on.
        let base = crate::shown::file_name(&file.name);
        let mut path = dir.join(&base);
        let mut n = 2;
        while path.exists() {
            path = dir.join(format!("{n}-{base}"));
            n += 1;
        }
        std::fs::write(&path, &plain[..]).map_err(|e| ClientError::Home(e.to_string()))?;
        Ok(Event::File { group, sender, path })
    }
}
