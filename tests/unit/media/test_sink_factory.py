"""media.sinks: make_muxer picks the muxer and leaves out audio the container cannot carry."""

from __future__ import annotations

import pytest

from media.codec_info import Codec
from media.sinks import FlvMuxer, Muxer, PsSink, TsMuxer, UnsupportedCodec, make_muxer


def test_formats_and_content_types() -> None:
    cases = [
        ("flv", FlvMuxer, "video/x-flv"),
        ("ts", TsMuxer, "video/mp2t"),
        ("ps", PsSink, "video/mp2p"),
    ]
    for fmt, cls, content_type in cases:
        muxer: Muxer = make_muxer(fmt, Codec.H264, Codec.PCMA)
        assert isinstance(muxer, cls)
        assert muxer.content_type == content_type


def test_audio_the_container_cannot_carry_is_left_out() -> None:
    flv = make_muxer("flv", Codec.H264, Codec.G729)
    assert isinstance(flv, FlvMuxer) and flv.audio_codec is None
    assert flv.header()[4] == 0x01  # video flag only
    ts = make_muxer("ts", Codec.H265, Codec.PCMU)
    assert isinstance(ts, TsMuxer) and ts.audio_codec is None
    ps = make_muxer("ps", Codec.H264, Codec.G729)
    assert isinstance(ps, PsSink) and ps.audio_codec == Codec.G729


def test_hevc_mode_and_errors() -> None:
    flv = make_muxer("flv", Codec.H265, None, hevc_mode="enhanced")
    assert isinstance(flv, FlvMuxer) and flv.hevc_mode == "enhanced"
    with pytest.raises(UnsupportedCodec):
        make_muxer("ts", Codec.SVAC, None)
    with pytest.raises(UnsupportedCodec):
        make_muxer("flv", Codec.MPEG4, Codec.PCMA)
    with pytest.raises(ValueError, match="unknown muxer format"):
        make_muxer("hls", Codec.H264, None)
