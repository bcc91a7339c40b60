"""Decoder configuration records built from in-band parameter sets, and ADTS headers.

Pure functions, no I/O. ``avc_config`` writes an AVCDecoderConfigurationRecord (ISO/IEC
14496-15 §5.3.3.1), ``hevc_config`` an HEVCDecoderConfigurationRecord (§8.3.3.1), both with
4-byte NAL lengths; ``parse_adts`` reads an ADTS header (ISO/IEC 14496-3 §1.A.2) and
``audio_specific_config`` writes the 2-byte AudioSpecificConfig (§1.6.2.1) that FLV and MP4
carry instead of ADTS. Parameter sets are NAL units with their header byte(s), no start code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from media.codec_info import BitReader, nal_rbsp

__all__ = [
    "ADTS_SAMPLE_RATES",
    "MAX_CONFIG",
    "AdtsHeader",
    "ConfigError",
    "annexb_spans",
    "audio_specific_config",
    "avc_config",
    "hevc_config",
    "parse_adts",
]

_START_CODE = re.compile(b"\x00\x00\x01")
_MAX_PARAM_SET = 4096  # bytes; a real SPS/PPS/VPS is tens of bytes, more is hostile input
MAX_CONFIG = 16 * 1024
"""Bytes of parameter sets in one configuration record; more is refused (hostile input)."""
_H264_EXT_PROFILES = frozenset((100, 110, 122, 144))  # 14496-15 §5.3.3.1.2: with chroma ext.
ADTS_SAMPLE_RATES = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)  # fmt: skip
"""ISO/IEC 14496-3 Table 1.18, samplingFrequencyIndex -> Hz."""


class ConfigError(ValueError):
    """A parameter set or ADTS header that cannot give a decoder configuration."""


def annexb_spans(data: bytes) -> list[tuple[int, int]]:
    """(begin, end) byte offsets of each NAL unit of an Annex-B stream, header included.

    Same rules as ``media.codec_info.iter_nals`` (bytes before the first start code are
    skipped; trailing zeros belong to the next 4-byte start code) but without copying, so a
    muxer slices each NAL once. ``re`` scans about twice as fast as ``bytes.find`` here.
    """
    spans = []
    begin = -1
    for match in _START_CODE.finditer(data):
        if begin >= 0:
            end = match.start()
            while end > begin and data[end - 1] == 0:
                end -= 1
            if end > begin:
                spans.append((begin, end))
        begin = match.end()
    if begin >= 0:
        end = len(data)
        while end > begin and data[end - 1] == 0:
            end -= 1
        if end > begin:
            spans.append((begin, end))
    return spans


def _Bits(rbsp: bytes) -> BitReader:  # reads like the class it returns
    """A bit reader whose overruns are ConfigErrors."""
    return BitReader(rbsp, ConfigError)


def _rbsp(nal: bytes, header_size: int) -> bytes:
    if len(nal) > _MAX_PARAM_SET:
        raise ConfigError(f"parameter set of {len(nal)} bytes is larger than {_MAX_PARAM_SET}")
    return nal_rbsp(nal, header_size)


def _array(nals: tuple[bytes, ...]) -> bytes:
    out = bytearray()
    for nal in nals:
        if len(out) + 2 + len(nal) > MAX_CONFIG:
            raise ConfigError(f"parameter sets larger than {MAX_CONFIG} bytes")
        out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


def avc_config(sps: tuple[bytes, ...], pps: tuple[bytes, ...]) -> bytes:
    """AVCDecoderConfigurationRecord (avcC) for H.264 SPS and PPS NAL units, NAL length 4."""
    if not sps or not pps or len(sps) > 31 or len(pps) > 255:
        raise ConfigError("avcC needs 1-31 SPS and 1-255 PPS")
    first = sps[0]
    if len(first) < 4 or first[0] & 0x1F != 7:
        raise ConfigError("first H.264 SPS is not an SPS NAL unit")
    profile = first[1]
    out = bytearray((1, profile, first[2], first[3], 0xFF, 0xE0 | len(sps)))
    out += _array(sps)
    out.append(len(pps))
    out += _array(pps)
    if profile in _H264_EXT_PROFILES:
        # H.264 §7.3.2.1.1: seq_parameter_set_id, then chroma_format_idc and bit depths.
        r = _Bits(_rbsp(first, 4))
        r.ue()
        chroma = r.ue()
        if chroma > 3:
            raise ConfigError(f"H.264 chroma_format_idc {chroma} is out of range")
        if chroma == 3:
            r.u(1)  # separate_colour_plane_flag
        luma, chroma_depth = r.ue(), r.ue()
        if luma > 7 or chroma_depth > 7:
            raise ConfigError("H.264 bit depth out of range")
        out += bytes((0xFC | chroma, 0xF8 | luma, 0xF8 | chroma_depth, 0))
    return bytes(out)


@dataclass(frozen=True, slots=True)
class _HevcSps:
    ptl: bytes  # general_profile_space .. general_level_idc, 12 bytes
    sub_layers: int
    temporal_id_nested: int
    chroma_format_idc: int
    bit_depth_luma_minus8: int
    bit_depth_chroma_minus8: int


def _parse_hevc_sps(nal: bytes) -> _HevcSps:
    """The fields of an H.265 SPS (§7.3.2.2) that hvcC repeats."""
    if len(nal) < 15 or (nal[0] >> 1) & 0x3F != 33:
        raise ConfigError("not an H.265 SPS NAL unit (type 33)")
    rbsp = _rbsp(nal, 2)
    r = _Bits(rbsp)
    r.u(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    nested = r.u(1)
    # profile_tier_level(1, max_sub_layers_minus1), §7.3.3: the general part is byte aligned.
    ptl = rbsp[1:13]
    r.u(96)
    present = [(r.u(1), r.u(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.u(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        r.u(88 * profile_present + 8 * level_present)
    r.ue()  # sps_seq_parameter_set_id
    chroma = r.ue()
    if chroma > 3:
        raise ConfigError(f"H.265 chroma_format_idc {chroma} is out of range")
    if chroma == 3:
        r.u(1)  # separate_colour_plane_flag
    r.ue()  # pic_width_in_luma_samples
    r.ue()  # pic_height_in_luma_samples
    if r.u(1):  # conformance_window_flag
        for _ in range(4):
            r.ue()
    luma, chroma_depth = r.ue(), r.ue()
    if luma > 7 or chroma_depth > 7:
        raise ConfigError("H.265 bit depth out of range")
    return _HevcSps(ptl, max_sub_layers_minus1 + 1, nested, chroma, luma, chroma_depth)


def hevc_config(vps: tuple[bytes, ...], sps: tuple[bytes, ...], pps: tuple[bytes, ...]) -> bytes:
    """HEVCDecoderConfigurationRecord (hvcC) for H.265 VPS, SPS and PPS NAL units.

    Profile, tier, level, compatibility and constraint flags are the SPS's general
    profile_tier_level; chroma format, bit depths, sub-layer count and temporal nesting come
    from the SPS too. min_spatial_segmentation_idc, parallelismType and avgFrameRate are 0
    ("unknown", allowed by §8.3.3.1.3); arrays are complete (the muxer drops in-band copies).
    """
    if not vps or not sps or not pps:
        raise ConfigError("hvcC needs at least one VPS, SPS and PPS")
    info = _parse_hevc_sps(sps[0])
    out = bytearray((1,))
    out += info.ptl
    out += b"\xf0\x00"  # reserved 1111, min_spatial_segmentation_idc 0
    out.append(0xFC)  # reserved 111111, parallelismType 0
    out.append(0xFC | info.chroma_format_idc)
    out.append(0xF8 | info.bit_depth_luma_minus8)
    out.append(0xF8 | info.bit_depth_chroma_minus8)
    out += b"\x00\x00"  # avgFrameRate
    # constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3
    out.append((info.sub_layers & 7) << 3 | info.temporal_id_nested << 2 | 3)
    out.append(3)  # numOfArrays
    for nal_type, nals in ((32, vps), (33, sps), (34, pps)):
        out.append(0x80 | nal_type)  # array_completeness 1
        out += len(nals).to_bytes(2, "big")
        out += _array(nals)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class AdtsHeader:
    """One ADTS frame header (ISO/IEC 14496-3 §1.A.2.2)."""

    object_type: int
    """audioObjectType: profile + 1 (2 = AAC LC)."""
    sampling_index: int
    channels: int
    header_size: int
    """7, or 9 with a CRC."""
    frame_size: int
    """Bytes of the whole frame, header included."""

    @property
    def sample_rate(self) -> int:
        """Hz."""
        return ADTS_SAMPLE_RATES[self.sampling_index]


def parse_adts(data: bytes, pos: int = 0) -> AdtsHeader:
    """The ADTS header at ``data[pos:]``; ``ConfigError`` if absent, bad or cut."""
    if len(data) - pos < 7 or data[pos] != 0xFF or data[pos + 1] & 0xF6 != 0xF0:
        raise ConfigError(f"no ADTS sync word at byte {pos}")
    b2 = data[pos + 2]
    index = (b2 >> 2) & 0x0F
    if index >= len(ADTS_SAMPLE_RATES):
        raise ConfigError(f"ADTS sampling_frequency_index {index} is reserved")
    channels = (b2 & 1) << 2 | data[pos + 3] >> 6
    size = (data[pos + 3] & 3) << 11 | data[pos + 4] << 3 | data[pos + 5] >> 5
    header = 7 if data[pos + 1] & 1 else 9
    if size <= header or pos + size > len(data):
        raise ConfigError(f"ADTS frame length {size} at byte {pos} does not fit the data")
    return AdtsHeader((b2 >> 6) + 1, index, channels, header, size)


def audio_specific_config(h: AdtsHeader) -> bytes:
    """2-byte AudioSpecificConfig for an ADTS stream (GASpecificConfig all zero)."""
    return (h.object_type << 11 | h.sampling_index << 7 | h.channels << 3).to_bytes(2, "big")
