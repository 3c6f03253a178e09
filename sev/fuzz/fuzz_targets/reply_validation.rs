//! Fuzzes every decoder of hypervisor- (or guest-) supplied data: MSR
//! protocol values, GHCB pages (guest-side reply checks and host-side
//! request parsing), IOIO information, event injection, PSC descriptors and
//! progress, the SNP CPUID page, and a full page state change against a
//! hypervisor that writes arbitrary headers.
//!
//! Checked beyond "no panic, no hang": strict decoders round-trip exactly
//! (a value that decodes re-encodes to the same bits, so no bit is ignored),
//! parsed scratch ranges stay inside the shared buffer, only #GP/#UD are
//! accepted as hypervisor exceptions, and a page state change ends within
//! its round bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sev::cpuid::SnpCpuidTable;
use sev::exception::Exception;
use sev::ghcb::{Ghcb, GhcbField, GhcbTransport, SHARED_BUFFER_SIZE};
use sev::host::NaeRequest;
use sev::ioio::IoioInfo;
use sev::msr_protocol::{MsrRequest, MsrResponse};
use sev::nae;
use sev::psc::{PSC_DESCRIPTOR_SIZE, PscDescriptor, PscEntry, PscHeader, PscOp};

const GHCB_GPA: u64 = 0x7000_0000;

fn u64_at(d: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i * 8 + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

/// A GHCB whose fields, bitmap and buffer come from `d`.
fn page_from(d: &[u8]) -> Box<Ghcb> {
    let mut g = Box::new(Ghcb::new());
    for (i, f) in GhcbField::ALL.into_iter().enumerate() {
        g.set(f, u64_at(d, i));
    }
    let bitmap = u64_at(d, 30) as u128 | (u64_at(d, 31) as u128) << 64;
    for f in GhcbField::ALL {
        if bitmap >> f.valid_bit() & 1 == 0 {
            g.invalidate(f);
        }
    }
    let buf = d.get(256..).unwrap_or(&[]);
    let n = buf.len().min(SHARED_BUFFER_SIZE);
    g.write_shared(0, &buf[..n]).unwrap();
    g.set_usage(if d.first() == Some(&0xff) { 1 } else { 0 });
    g
}

struct PscHv<'a> {
    ghcb: Box<Ghcb>,
    data: &'a [u8],
    exits: usize,
}

impl GhcbTransport for PscHv<'_> {
    fn ghcb(&mut self) -> &mut Ghcb {
        &mut self.ghcb
    }
    fn ghcb_gpa(&self) -> u64 {
        GHCB_GPA
    }
    fn vmgexit(&mut self) {
        let k = self.exits;
        self.exits += 1;
        assert!(matches!(
            NaeRequest::parse(&self.ghcb, GHCB_GPA),
            Ok((NaeRequest::Psc, _))
        ));
        // Header bytes from the input; info1 = 0, info2 from the input.
        let h: Vec<u8> = (0..8)
            .map(|j| self.data.get(k * 9 + j).copied().unwrap_or(0xff))
            .collect();
        let err = self.data.get(k * 9 + 8).copied().unwrap_or(0);
        sev::host::reply_ok(&mut self.ghcb, (err & 1) as u64, &[]);
        self.ghcb.write_shared(0, &h).unwrap();
    }
}

fuzz_target!(|d: &[u8]| {
    let v = u64_at(d, 0);

    if let Ok(r) = MsrRequest::decode(v) {
        assert_eq!(r.encode(), v, "{r:?}");
    }
    if let Ok(r) = MsrResponse::decode(v) {
        assert_eq!(r.encode(), v, "{r:?}");
    }
    if let Ok(req) = MsrRequest::decode(u64_at(d, 1)) {
        if let Ok(resp) = MsrResponse::expect(req, v) {
            assert_eq!(Some((v & 0xfff) as u16), req.response_code());
            assert_eq!(resp.encode(), v);
        }
    }
    if let Some(i) = IoioInfo::decode(v) {
        assert_eq!(i.encode(), v);
    }
    if let Some(e) = Exception::from_hypervisor(v) {
        assert!(matches!(e, Exception::Gp(_) | Exception::Ud));
    }
    if let Some(e) = PscEntry::from_raw(v) {
        assert_eq!(e.raw(), v);
    }

    // Guest-side reply checks and host-side parsing of the same page.
    let g = page_from(d);
    let s = g.snapshot();
    let _ = nae::check_reply(&s);
    for f in GhcbField::ALL {
        assert_eq!(s.get(f), g.get(f));
    }
    if let Ok((req, _)) = NaeRequest::parse(&g, GHCB_GPA) {
        match req {
            NaeRequest::IoString {
                info,
                count,
                scratch,
            } => {
                assert!(scratch.offset + scratch.len <= SHARED_BUFFER_SIZE);
                assert_eq!(scratch.len as u64, count * info.size as u64);
            }
            NaeRequest::MmioRead { scratch, .. } | NaeRequest::MmioWrite { scratch, .. } => {
                assert!(scratch.offset + scratch.len <= SHARED_BUFFER_SIZE);
                assert!(scratch.len > 0);
            }
            _ => {}
        }
    }

    // PSC descriptor parsing round-trips exactly.
    let mut image = [0u8; PSC_DESCRIPTOR_SIZE];
    let n = d.len().min(PSC_DESCRIPTOR_SIZE);
    image[..n].copy_from_slice(&d[..n]);
    if let Ok(desc) = PscDescriptor::from_bytes(&image) {
        let mut back = [0u8; PSC_DESCRIPTOR_SIZE];
        desc.to_bytes(&mut back);
        assert!(back == image);
        assert!(desc.header.cur_entry <= desc.header.end_entry);
    }
    let sent = PscHeader::from_bytes(d.get(..8).and_then(|x| x.try_into().ok()).unwrap_or([0; 8]));
    let got = PscHeader::from_bytes(
        d.get(8..16)
            .and_then(|x| x.try_into().ok())
            .unwrap_or([0; 8]),
    );
    if let Ok(done) = PscDescriptor::check_progress(sent, got) {
        assert!(got.cur_entry >= sent.cur_entry && got.end_entry == sent.end_entry);
        assert_eq!(done, got.cur_entry > got.end_entry);
    }

    // The SNP CPUID page from raw bytes: lookups never read past the table.
    let mut table = SnpCpuidTable::default();
    let tsize = core::mem::size_of::<SnpCpuidTable>();
    let mut raw = vec![0u8; tsize];
    let n = d.len().min(tsize);
    raw[..n].copy_from_slice(&d[..n]);
    // SAFETY: SnpCpuidTable is repr(C) integers only; any bytes are valid,
    // and `raw` holds exactly size_of::<SnpCpuidTable>() bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(
            raw.as_ptr(),
            (&mut table as *mut SnpCpuidTable).cast(),
            tsize,
        )
    };
    let valid = table.validate().is_ok();
    assert_eq!(valid, table.count as usize <= 64);
    let _ = table.lookup(v as u32, (v >> 32) as u32, u64_at(d, 2), u64_at(d, 3));

    // A full page state change against arbitrary progress reports.
    let count = (d.first().copied().unwrap_or(1) as usize % 8) + 1;
    let entries: Vec<PscEntry> = (0..count as u64)
        .map(|k| PscEntry::new(k, PscOp::Shared, k & 1 == 1))
        .collect();
    let desc = PscDescriptor::new(&entries).unwrap();
    let mut hv = PscHv {
        ghcb: Box::new(Ghcb::new()),
        data: d,
        exits: 0,
    };
    let _ = nae::page_state_change(&mut hv, &desc);
    assert!(hv.exits <= desc.max_rounds());
});
