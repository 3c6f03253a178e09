//! The IGVM loader against files built with the reference `igvm` crate: what reaches the launch
//! target, and how broken, hostile or unsupported files are refused.

use std::collections::BTreeMap;

use handoff::launch::{
    IMAGE_GPA, MEMORY_TYPE_RAM, MemoryMapEntry, PARAM_AREA_SIZE, PARAM_CMDLINE_OFFSET, PARAM_GPA,
    PARAM_MEMORY_MAP_OFFSET, PARAM_VP_COUNT_OFFSET,
};
use igvm::snp_defs::SevVmsa;
use igvm::{
    Arch, IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{
    IGVM_VHS_PARAMETER, IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM, IgvmPageDataFlags,
    IgvmPageDataType, IgvmPlatformType, IgvmVariableHeaderType as Vht,
};
use sim::igvm::{IgvmError, LaunchParams, LaunchTarget, LoadSummary, OutsideGuestMemory, load};
use zerocopy::{FromBytes, FromZeros};

const PAGE: usize = 4096;
const SEV_ES_MASK: u32 = 1;
/// Guest RAM of the tests: below 640 KiB and 1 MiB .. 16 MiB.
const RAM: &[(u64, u64)] = &[(0x10_0000, 0xf0_0000), (0, 0xa_0000)];
const CMDLINE: &str = "log=debug test=all";

/// A launch target that records everything, as the guest would see it.
#[derive(Default)]
struct Recorder {
    /// Full pages (data plus zero fill) by GPA, in the order written.
    pages: BTreeMap<u64, Vec<u8>>,
    order: Vec<u64>,
    vmsas: Vec<(u16, Vec<u8>)>,
}

impl LaunchTarget for Recorder {
    fn write_page(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutsideGuestMemory> {
        assert!(data.len() <= PAGE, "more than a page");
        assert_eq!(gpa % PAGE as u64, 0, "unaligned page");
        if !RAM
            .iter()
            .any(|&(start, len)| gpa >= start && gpa < start + len)
        {
            return Err(OutsideGuestMemory { gpa });
        }
        let mut page = vec![0; PAGE];
        page[..data.len()].copy_from_slice(data);
        self.pages.insert(gpa, page);
        self.order.push(gpa);
        Ok(())
    }

    fn vp_context(&mut self, vp_index: u16, vmsa: &[u8; 4096]) {
        self.vmsas.push((vp_index, vmsa.to_vec()));
    }
}

fn params(vp_count: u32) -> LaunchParams<'static> {
    LaunchParams {
        vp_count,
        ram: RAM,
        cmdline: CMDLINE,
    }
}

fn platform(mask: u32, platform_type: IgvmPlatformType) -> IgvmPlatformHeader {
    IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
        compatibility_mask: mask,
        highest_vtl: 0,
        platform_type,
        platform_version: 1,
        shared_gpa_boundary: 0,
    })
}

fn page(gpa: u64, mask: u32, data: Vec<u8>) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::PageData {
        gpa,
        compatibility_mask: mask,
        flags: IgvmPageDataFlags::new(),
        data_type: IgvmPageDataType::NORMAL,
        data,
    }
}

fn param(index: u32, offset: u32) -> IGVM_VHS_PARAMETER {
    IGVM_VHS_PARAMETER {
        parameter_area_index: index,
        byte_offset: offset,
    }
}

fn area(index: u32, bytes: u64) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::ParameterArea {
        number_of_bytes: bytes,
        parameter_area_index: index,
        initial_data: Vec::new(),
    }
}

fn insert(index: u32, gpa: u64, mask: u32) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
        gpa,
        compatibility_mask: mask,
        parameter_area_index: index,
    })
}

/// A VMSA whose every byte is distinct from its neighbours, so misplaced bytes show.
fn vmsa_bytes(seed: u8) -> Vec<u8> {
    (0..size_of::<SevVmsa>())
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

fn vp_context(vp_index: u16, mask: u32, seed: u8) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::SnpVpContext {
        gpa: 0xf000,
        compatibility_mask: mask,
        vp_index,
        vmsa: Box::new(SevVmsa::read_from_bytes(&vmsa_bytes(seed)).unwrap()),
    }
}

fn serialize(
    revision: IgvmRevision,
    platforms: Vec<IgvmPlatformHeader>,
    inits: Vec<IgvmInitializationHeader>,
    directives: Vec<IgvmDirectiveHeader>,
) -> Vec<u8> {
    let file = IgvmFile::new(revision, platforms, inits, directives).expect("valid IGVM");
    let mut out = Vec::new();
    file.serialize(&mut out).expect("serializes");
    out
}

/// An SEV-ES file with the given directives.
fn sev_es_file(directives: Vec<IgvmDirectiveHeader>) -> Vec<u8> {
    serialize(
        IgvmRevision::V1,
        vec![platform(SEV_ES_MASK, IgvmPlatformType::SEV_ES)],
        vec![],
        directives,
    )
}

/// Image page contents: `len` bytes of a pattern.
fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// The launch contract's directives: three image pages (full, short, zero), the parameter area
/// with vp count, command line and memory map, the VMSA of vCPU 0, required memory.
fn launch_directives() -> Vec<IgvmDirectiveHeader> {
    vec![
        IgvmDirectiveHeader::RequiredMemory {
            gpa: 0,
            compatibility_mask: SEV_ES_MASK,
            number_of_bytes: 0xa_0000,
            vtl2_protectable: false,
        },
        page(IMAGE_GPA, SEV_ES_MASK, image(PAGE, 0x5a)),
        page(IMAGE_GPA + 0x1000, SEV_ES_MASK, image(100, 0x33)),
        page(IMAGE_GPA + 0x2000, SEV_ES_MASK, Vec::new()),
        area(0, PARAM_AREA_SIZE),
        IgvmDirectiveHeader::VpCount(param(0, PARAM_VP_COUNT_OFFSET)),
        IgvmDirectiveHeader::CommandLine(param(0, PARAM_CMDLINE_OFFSET)),
        IgvmDirectiveHeader::MemoryMap(param(0, PARAM_MEMORY_MAP_OFFSET)),
        insert(0, PARAM_GPA, SEV_ES_MASK),
        vp_context(0, SEV_ES_MASK, 9),
    ]
}

fn load_into(file: &[u8], params: &LaunchParams) -> (Result<LoadSummary, IgvmError>, Recorder) {
    let mut rec = Recorder::default();
    let result = load(file, params, &mut rec);
    (result, rec)
}

/// Rewrites the checksum after a test changed the headers (CRC-32 of the fixed header with a
/// zero checksum field, then the variable headers).
fn fix_checksum(file: &mut [u8]) {
    let version = u32::from_le_bytes(file[4..8].try_into().unwrap());
    let fixed = if version == 2 { 32 } else { 24 };
    let var_off = u32::from_le_bytes(file[8..12].try_into().unwrap()) as usize;
    let var_size = u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
    let mut covered = file[..fixed].to_vec();
    covered[20..24].fill(0);
    covered.extend_from_slice(&file[var_off..var_off + var_size]);
    let crc = handoff::crc32::crc32(&covered);
    file[20..24].copy_from_slice(&crc.to_le_bytes());
}

/// File offsets of the bodies of the variable headers of type `typ`.
fn bodies(file: &[u8], typ: Vht) -> Vec<usize> {
    let var_off = u32::from_le_bytes(file[8..12].try_into().unwrap()) as usize;
    let var_end = var_off + u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
    let mut pos = var_off;
    let mut found = Vec::new();
    while pos < var_end {
        let t = u32::from_le_bytes(file[pos..pos + 4].try_into().unwrap());
        let len = u32::from_le_bytes(file[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if t == typ.0 {
            found.push(pos + 8);
        }
        pos += 8 + len.next_multiple_of(8);
    }
    found
}

fn put_u32(file: &mut [u8], at: usize, value: u32) {
    file[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Sets the u32 at `field` of the `nth` header of type `typ` and fixes the checksum: how the
/// tests make files the reference crate refuses to build.
fn patch(file: &mut [u8], typ: Vht, nth: usize, field: usize, value: u32) {
    let at = bodies(file, typ)[nth] + field;
    put_u32(file, at, value);
    fix_checksum(file);
}

#[test]
fn the_launch_contract_reaches_the_target_exactly() {
    let file = sev_es_file(launch_directives());
    let (result, rec) = load_into(&file, &params(2));
    assert_eq!(
        result,
        Ok(LoadSummary {
            pages: 6,
            vp_contexts: 1
        })
    );
    let param_pages: Vec<u64> = (0..3).map(|i| PARAM_GPA + i * 0x1000).collect();
    let mut expected_order = vec![IMAGE_GPA, IMAGE_GPA + 0x1000, IMAGE_GPA + 0x2000];
    expected_order.extend(&param_pages);
    assert_eq!(rec.order, expected_order, "pages in file order");

    assert_eq!(rec.pages[&IMAGE_GPA], image(PAGE, 0x5a));
    let mut short = image(100, 0x33);
    short.resize(PAGE, 0);
    assert_eq!(
        rec.pages[&(IMAGE_GPA + 0x1000)],
        short,
        "short data is zero filled"
    );
    assert_eq!(rec.pages[&(IMAGE_GPA + 0x2000)], vec![0; PAGE], "zero page");

    let area: Vec<u8> = param_pages
        .iter()
        .flat_map(|gpa| rec.pages[gpa].clone())
        .collect();
    let at = |off: u32, len: usize| &area[off as usize..off as usize + len];
    assert_eq!(at(PARAM_VP_COUNT_OFFSET, 4), 2u32.to_le_bytes());
    let mut cmdline = CMDLINE.as_bytes().to_vec();
    cmdline.push(0);
    assert_eq!(at(PARAM_CMDLINE_OFFSET, cmdline.len()), cmdline);
    let entry = |off: usize| {
        let bytes = at(PARAM_MEMORY_MAP_OFFSET, 4096);
        let field = |i: usize| u64::from_le_bytes(bytes[off + i..off + i + 8].try_into().unwrap());
        MemoryMapEntry {
            starting_gpa_page_number: field(0),
            number_of_pages: field(8),
            entry_type: u16::from_le_bytes(bytes[off + 16..off + 18].try_into().unwrap()),
            flags: u16::from_le_bytes(bytes[off + 18..off + 20].try_into().unwrap()),
            reserved: u32::from_le_bytes(bytes[off + 20..off + 24].try_into().unwrap()),
        }
    };
    let ram = |start: u64, pages: u64| MemoryMapEntry {
        starting_gpa_page_number: start,
        number_of_pages: pages,
        entry_type: MEMORY_TYPE_RAM,
        flags: 0,
        reserved: 0,
    };
    assert_eq!(entry(0), ram(0, 0xa0), "sorted");
    assert_eq!(entry(24), ram(0x100, 0xf00));
    assert_eq!(entry(48), MemoryMapEntry::default(), "terminator");
    // Nothing else in the area was touched.
    let mut rest = area.clone();
    rest[..4].fill(0);
    let cmd = PARAM_CMDLINE_OFFSET as usize;
    rest[cmd..cmd + cmdline.len()].fill(0);
    let map = PARAM_MEMORY_MAP_OFFSET as usize;
    rest[map..map + 48].fill(0);
    assert!(rest.iter().all(|&b| b == 0));

    let mut vmsa = vmsa_bytes(9);
    vmsa.resize(PAGE, 0);
    assert_eq!(rec.vmsas, vec![(0, vmsa)]);
}

#[test]
fn a_version_2_file_loads_the_same() {
    let v2 = IgvmRevision::V2 {
        arch: Arch::X64,
        page_size: 4096,
    };
    let file = serialize(
        v2,
        vec![platform(SEV_ES_MASK, IgvmPlatformType::SEV_ES)],
        vec![],
        launch_directives(),
    );
    let (result, v2_rec) = load_into(&file, &params(2));
    assert!(result.is_ok(), "{result:?}");
    let (_, v1_rec) = load_into(&sev_es_file(launch_directives()), &params(2));
    assert_eq!(v2_rec.pages, v1_rec.pages);
    assert_eq!(v2_rec.vmsas, v1_rec.vmsas);
}

#[test]
fn headers_for_other_platforms_are_skipped() {
    // SNP is mask 1, SEV-ES mask 2; the SNP-only parts (an ID block, a policy, its own page,
    // parameter area and VMSA) must not reach the target or be refused.
    let snp = 1;
    let es = 2;
    let file = serialize(
        IgvmRevision::V1,
        vec![
            platform(snp, IgvmPlatformType::SEV_SNP),
            platform(es, IgvmPlatformType::SEV_ES),
        ],
        vec![IgvmInitializationHeader::GuestPolicy {
            policy: 0x30000,
            compatibility_mask: snp | es,
        }],
        vec![
            page(0x1000, snp, image(PAGE, 1)),
            page(0x2000, es, image(PAGE, 2)),
            page(0x3000, snp | es, image(PAGE, 3)),
            area(0, 0x1000),
            area(1, 0x1000),
            IgvmDirectiveHeader::VpCount(param(0, 0)),
            IgvmDirectiveHeader::VpCount(param(1, 8)),
            insert(0, 0x4000, snp),
            insert(1, 0x5000, es),
            vp_context(0, snp, 1),
            vp_context(0, es, 2),
            snp_id_block(snp),
        ],
    );
    let (result, rec) = load_into(&file, &params(1));
    assert_eq!(
        result,
        Ok(LoadSummary {
            pages: 3,
            vp_contexts: 1
        })
    );
    assert_eq!(rec.order, [0x2000, 0x3000, 0x5000]);
    assert_eq!(rec.pages[&0x5000][8..12], 1u32.to_le_bytes());
    let mut vmsa = vmsa_bytes(2);
    vmsa.resize(PAGE, 0);
    assert_eq!(rec.vmsas, vec![(0, vmsa)]);
}

#[test]
fn every_truncation_is_refused() {
    let file = sev_es_file(launch_directives());
    for len in 0..file.len() {
        let (result, _) = load_into(&file[..len], &params(1));
        assert!(result.is_err(), "truncated to {len} bytes: {result:?}");
    }
}

#[test]
fn a_variable_header_section_cut_inside_a_header_is_refused() {
    // Cut the variable headers short with consistent sizes and a valid checksum, so the header
    // walk itself meets the cut. A cut between headers leaves a valid, shorter file.
    let file = sev_es_file(launch_directives());
    let var_off = u32::from_le_bytes(file[8..12].try_into().unwrap()) as usize;
    let var_size = u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
    let mut boundaries = vec![0];
    let mut pos = var_off;
    while pos < var_off + var_size {
        let len = u32::from_le_bytes(file[pos + 4..pos + 8].try_into().unwrap()) as usize;
        pos += 8 + len.next_multiple_of(8);
        boundaries.push(pos - var_off);
    }
    let (_, full) = load_into(&file, &params(1));
    for size in 0..var_size {
        let mut cut = file.clone();
        put_u32(&mut cut, 12, size as u32);
        fix_checksum(&mut cut);
        let (result, rec) = load_into(&cut, &params(1));
        if boundaries.contains(&size) {
            assert!(
                result.is_ok() || size == 0,
                "cut to {size} bytes: {result:?}"
            );
            assert!(rec.pages.iter().all(|(gpa, page)| full.pages[gpa] == *page));
        } else {
            assert!(
                matches!(result, Err(IgvmError::Malformed { .. })),
                "variable headers cut to {size} bytes: {result:?}"
            );
        }
    }
}

#[test]
fn a_bad_checksum_is_refused() {
    let mut file = sev_es_file(launch_directives());
    file[20] ^= 1;
    let (result, rec) = load_into(&file, &params(1));
    assert!(
        matches!(result, Err(IgvmError::BadChecksum { .. })),
        "{result:?}"
    );
    assert!(rec.pages.is_empty());

    // A changed header byte (the first page's GPA) is caught too.
    let mut file = sev_es_file(launch_directives());
    let at = bodies(&file, Vht::IGVM_VHT_PAGE_DATA)[0];
    file[at + 1] ^= 0x10;
    let (result, _) = load_into(&file, &params(1));
    assert!(
        matches!(result, Err(IgvmError::BadChecksum { .. })),
        "{result:?}"
    );
}

#[test]
fn fixed_header_errors() {
    let file = sev_es_file(launch_directives());
    let mut bad = file.clone();
    bad[0] = b'X';
    assert!(matches!(
        load_into(&bad, &params(1)).0,
        Err(IgvmError::BadMagic { .. })
    ));

    let mut bad = file.clone();
    put_u32(&mut bad, 4, 3);
    let err = load_into(&bad, &params(1)).0.unwrap_err();
    assert_eq!(
        err,
        IgvmError::UnsupportedFormat {
            what: "format version",
            value: 3
        }
    );

    let mut longer = file.clone();
    longer.push(0);
    assert!(matches!(
        load_into(&longer, &params(1)).0,
        Err(IgvmError::SizeMismatch { .. })
    ));
}

#[test]
fn a_file_without_sev_es_names_its_platforms() {
    let file = serialize(
        IgvmRevision::V1,
        vec![
            platform(1, IgvmPlatformType::SEV_SNP),
            platform(2, IgvmPlatformType::TDX),
        ],
        vec![],
        vec![page(0x1000, 1, image(PAGE, 1))],
    );
    let (result, rec) = load_into(&file, &params(1));
    let err = result.unwrap_err();
    assert_eq!(
        err,
        IgvmError::NoSevEsPlatform {
            found: vec![IgvmPlatformType::SEV_SNP, IgvmPlatformType::TDX]
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("SEV_SNP, TDX") && msg.contains("SEV_ES"),
        "{msg}"
    );
    assert!(rec.pages.is_empty());
}

#[test]
fn unsupported_headers_are_named() {
    let cases: Vec<(IgvmDirectiveHeader, &str, u32)> = vec![
        (
            IgvmDirectiveHeader::Madt(param(0, 0)),
            "IGVM_VHT_MADT",
            Vht::IGVM_VHT_MADT.0,
        ),
        (
            IgvmDirectiveHeader::ErrorRange {
                gpa: 0x1000,
                compatibility_mask: SEV_ES_MASK,
                size_bytes: 0x1000,
            },
            "IGVM_VHT_ERROR_RANGE",
            Vht::IGVM_VHT_ERROR_RANGE.0,
        ),
        (
            IgvmDirectiveHeader::PageData {
                gpa: 0x20_0000,
                compatibility_mask: SEV_ES_MASK,
                flags: IgvmPageDataFlags::new().with_is_2mb_page(true),
                data_type: IgvmPageDataType::NORMAL,
                data: Vec::new(),
            },
            "2 MiB page data (IGVM_VHT_PAGE_DATA)",
            Vht::IGVM_VHT_PAGE_DATA.0,
        ),
        (
            IgvmDirectiveHeader::PageData {
                gpa: 0x1000,
                compatibility_mask: SEV_ES_MASK,
                flags: IgvmPageDataFlags::new(),
                data_type: IgvmPageDataType::CPUID_DATA,
                data: Vec::new(),
            },
            "an SEV-SNP CPUID page (IGVM_VHT_PAGE_DATA)",
            Vht::IGVM_VHT_PAGE_DATA.0,
        ),
    ];
    for (directive, what, header_type) in cases {
        let file = sev_es_file(vec![area(0, 0x1000), directive]);
        let err = load_into(&file, &params(1)).0.unwrap_err();
        assert_eq!(err, IgvmError::Unsupported { what, header_type });
        assert!(err.to_string().contains(what), "{err}");
    }
}

fn snp_id_block(mask: u32) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::SnpIdBlock {
        compatibility_mask: mask,
        author_key_enabled: 0,
        reserved: [0; 3],
        ld: [0; 48],
        family_id: [0; 16],
        image_id: [0; 16],
        version: 0,
        guest_svn: 0,
        id_key_algorithm: 0,
        author_key_algorithm: 0,
        id_key_signature: Box::new(FromZeros::new_zeroed()),
        id_public_key: Box::new(FromZeros::new_zeroed()),
        author_key_signature: Box::new(FromZeros::new_zeroed()),
        author_public_key: Box::new(FromZeros::new_zeroed()),
    }
}

#[test]
fn unknown_types_are_refused_unless_optional() {
    let file = sev_es_file(vec![IgvmDirectiveHeader::RequiredMemory {
        gpa: 0x1000_0000,
        compatibility_mask: SEV_ES_MASK,
        number_of_bytes: 0x1000,
        vtl2_protectable: false,
    }]);
    let at = bodies(&file, Vht::IGVM_VHT_REQUIRED_MEMORY)[0] - 8;

    let mut unknown = file.clone();
    put_u32(&mut unknown, at, 0x3f0);
    fix_checksum(&mut unknown);
    let err = load_into(&unknown, &params(1)).0.unwrap_err();
    assert_eq!(
        err,
        IgvmError::Unsupported {
            what: "an unknown directive type",
            header_type: 0x3f0
        }
    );

    let mut optional = file.clone();
    put_u32(&mut optional, at, 0x8000_0305);
    fix_checksum(&mut optional);
    assert_eq!(
        load_into(&optional, &params(1)).0,
        Ok(LoadSummary {
            pages: 0,
            vp_contexts: 0
        }),
        "an optional header is skipped"
    );
}

#[test]
fn parameter_area_misuse_is_refused() {
    // A parameter that does not fit its area.
    let file = sev_es_file(vec![
        area(0, 0x1000),
        IgvmDirectiveHeader::VpCount(param(0, 0xffe)),
    ]);
    assert_eq!(
        load_into(&file, &params(1)).0,
        Err(IgvmError::ParameterOutOfArea {
            index: 0,
            byte_offset: 0xffe,
            len: 4,
            area_size: 0x1000
        })
    );
    let file = sev_es_file(vec![
        area(0, 0x1000),
        IgvmDirectiveHeader::CommandLine(param(0, 0x2000)),
    ]);
    assert!(matches!(
        load_into(&file, &params(1)).0,
        Err(IgvmError::ParameterOutOfArea { .. })
    ));

    // An undeclared area.
    let mut file = sev_es_file(vec![
        area(0, 0x1000),
        IgvmDirectiveHeader::VpCount(param(0, 0)),
    ]);
    patch(&mut file, Vht::IGVM_VHT_VP_COUNT_PARAMETER, 0, 0, 7);
    assert_eq!(
        load_into(&file, &params(1)).0,
        Err(IgvmError::UndeclaredParameterArea { index: 7 })
    );

    // An area declared twice.
    let mut file = sev_es_file(vec![area(0, 0x1000), area(1, 0x1000)]);
    patch(&mut file, Vht::IGVM_VHT_PARAMETER_AREA, 1, 8, 0);
    assert_eq!(
        load_into(&file, &params(1)).0,
        Err(IgvmError::DuplicateParameterArea { index: 0 })
    );

    // An area used, or inserted again, after its insertion.
    let directives = || {
        vec![
            area(0, 0x1000),
            area(1, 0x1000),
            insert(0, 0x1000, SEV_ES_MASK),
            IgvmDirectiveHeader::VpCount(param(1, 0)),
            insert(1, 0x2000, SEV_ES_MASK),
        ]
    };
    let mut file = sev_es_file(directives());
    patch(&mut file, Vht::IGVM_VHT_VP_COUNT_PARAMETER, 0, 0, 0);
    assert_eq!(
        load_into(&file, &params(1)).0,
        Err(IgvmError::ParameterAreaInserted { index: 0 })
    );
    let mut file = sev_es_file(directives());
    patch(&mut file, Vht::IGVM_VHT_PARAMETER_INSERT, 1, 12, 0);
    assert_eq!(
        load_into(&file, &params(1)).0,
        Err(IgvmError::ParameterAreaInserted { index: 0 })
    );
}

#[test]
fn command_line_limits() {
    let file = sev_es_file(vec![
        area(0, 0x1000),
        IgvmDirectiveHeader::CommandLine(param(0, 0xff0)),
        insert(0, 0x1000, SEV_ES_MASK),
    ]);
    let fits = LaunchParams {
        cmdline: "0123456789abcde",
        ..params(1)
    };
    let (result, rec) = load_into(&file, &fits);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(&rec.pages[&0x1000][0xff0..], b"0123456789abcde\0");

    let long = LaunchParams {
        cmdline: "0123456789abcdef",
        ..params(1)
    };
    let err = load_into(&file, &long).0.unwrap_err();
    assert_eq!(err, IgvmError::CommandLineTooLong { len: 16, room: 16 });
    assert!(err.to_string().contains("room for 15"), "{err}");

    for bad in ["caf\u{e9}", "a\0b"] {
        let p = LaunchParams {
            cmdline: bad,
            ..params(1)
        };
        assert_eq!(load_into(&file, &p).0, Err(IgvmError::CommandLineNotAscii));
    }
}

#[test]
fn memory_map_fills_its_room() {
    // Room for exactly the two RAM ranges: no terminator (the area's end ends the map).
    let file = sev_es_file(vec![
        area(0, 0x1000),
        IgvmDirectiveHeader::MemoryMap(param(0, 0x1000 - 48)),
        insert(0, 0x1000, SEV_ES_MASK),
    ]);
    let (result, rec) = load_into(&file, &params(1));
    assert!(result.is_ok(), "{result:?}");
    let tail = &rec.pages[&0x1000][0x1000 - 48..];
    assert_eq!(tail[0..8], 0u64.to_le_bytes());
    assert_eq!(tail[8..16], 0xa0u64.to_le_bytes());
    assert_eq!(tail[24..32], 0x100u64.to_le_bytes());
    assert_eq!(tail[32..40], 0xf00u64.to_le_bytes());

    let file = sev_es_file(vec![
        area(0, 0x1000),
        IgvmDirectiveHeader::MemoryMap(param(0, 0x1000 - 47)),
    ]);
    assert_eq!(
        load_into(&file, &params(1)).0,
        Err(IgvmError::MemoryMapTooLarge { ranges: 2, room: 1 })
    );
}

#[test]
fn vp_context_errors() {
    let file = sev_es_file(vec![
        vp_context(0, SEV_ES_MASK, 1),
        vp_context(0, SEV_ES_MASK, 2),
    ]);
    assert_eq!(
        load_into(&file, &params(2)).0,
        Err(IgvmError::DuplicateVpContext { vp_index: 0 })
    );
    let file = sev_es_file(vec![
        vp_context(0, SEV_ES_MASK, 1),
        vp_context(2, SEV_ES_MASK, 2),
    ]);
    let (result, rec) = load_into(&file, &params(2));
    assert_eq!(result.map(|s| s.vp_contexts), Ok(2), "checked and counted");
    assert_eq!(
        rec.vmsas.iter().map(|v| v.0).collect::<Vec<_>>(),
        [0],
        "a context beyond the launch's vCPUs is not used"
    );
    let file = sev_es_file(vec![
        vp_context(0, SEV_ES_MASK, 1),
        vp_context(1, SEV_ES_MASK, 2),
    ]);
    let (result, rec) = load_into(&file, &params(2));
    assert_eq!(result.map(|s| s.vp_contexts), Ok(2));
    assert_eq!(rec.vmsas.iter().map(|v| v.0).collect::<Vec<_>>(), [0, 1]);
}

#[test]
fn memory_errors() {
    let required = |gpa, number_of_bytes| IgvmDirectiveHeader::RequiredMemory {
        gpa,
        compatibility_mask: SEV_ES_MASK,
        number_of_bytes,
        vtl2_protectable: false,
    };
    let file = sev_es_file(vec![required(0x9f000, 0x2000)]);
    assert_eq!(
        load_into(&file, &params(1)).0,
        Err(IgvmError::RequiredMemoryMissing {
            gpa: 0x9f000,
            size: 0x2000
        })
    );
    let file = sev_es_file(vec![required(0x10_0000, 0xf0_0000)]);
    assert!(load_into(&file, &params(1)).0.is_ok());

    let file = sev_es_file(vec![page(0xa_0000, SEV_ES_MASK, Vec::new())]);
    let err = load_into(&file, &params(1)).0.unwrap_err();
    assert_eq!(err, IgvmError::OutsideGuestMemory { gpa: 0xa_0000 });
    assert!(err.to_string().contains("mem=<MiB>"), "{err}");

    let file = sev_es_file(vec![
        page(0x2000, SEV_ES_MASK, image(PAGE, 1)),
        area(0, 0x2000),
        insert(0, 0x1000, SEV_ES_MASK),
    ]);
    assert_eq!(
        load_into(&file, &params(1)).0,
        Err(IgvmError::PageLoadedTwice { gpa: 0x2000 })
    );
}

#[test]
fn an_snp_id_block_for_sev_es_is_refused_by_name() {
    let file = sev_es_file(vec![snp_id_block(SEV_ES_MASK)]);
    let err = load_into(&file, &params(1)).0.unwrap_err();
    assert_eq!(
        err,
        IgvmError::Unsupported {
            what: "IGVM_VHT_SNP_ID_BLOCK",
            header_type: Vht::IGVM_VHT_SNP_ID_BLOCK.0
        }
    );
    assert!(err.to_string().contains("IGVM_VHT_SNP_ID_BLOCK"), "{err}");
}

/// xorshift64: a fixed, reproducible byte stream for the mutation test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn mutated_headers_never_panic() {
    // Mutate the headers (not the file data) and fix the checksum, so every mutation reaches
    // the header walk and the directives. Any result is fine; a panic fails the test.
    let file = sev_es_file(launch_directives());
    let header_end = {
        let var_off = u32::from_le_bytes(file[8..12].try_into().unwrap()) as usize;
        var_off + u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize
    };
    let mut loaded = 0;
    for at in 0..header_end {
        for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut m = file.clone();
            m[at] = value;
            if at >= 24 {
                fix_checksum(&mut m);
            }
            loaded += usize::from(load_into(&m, &params(2)).0.is_ok());
        }
    }
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..20_000 {
        let mut m = file.clone();
        for _ in 0..1 + rng.next() % 4 {
            let at = 16 + (rng.next() as usize) % (header_end - 16);
            m[at] = rng.next() as u8;
        }
        fix_checksum(&mut m);
        loaded += usize::from(load_into(&m, &params(2)).0.is_ok());
    }
    assert!(
        loaded > 0,
        "some mutations (e.g. in page contents offsets) still load"
    );
}

#[test]
fn messages_are_actionable() {
    let err = IgvmError::Malformed {
        offset: 0x40,
        problem: "the padding after a header is not zero",
    };
    assert_eq!(
        err.to_string(),
        "malformed IGVM file at byte 0x40: the padding after a header is not zero"
    );
    let err = IgvmError::NoSevEsPlatform { found: vec![] };
    assert!(err.to_string().contains("lists no platform"), "{err}");
}
