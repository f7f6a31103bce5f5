"""laser_fairseq.data.synthesis: the libespeak-ng binding, 16 kHz audio and exact phone boundaries, frame labels.

Real libespeak-ng from the espeakng-loader wheel, one sentence at a time (no corpus): fast enough for
`make mutate MUTATE_SCOPE=corpus`. References are independent: espeak's own parameter getter and phonemiser,
analytic signals for the resampler, hand-computed fractions for the boundaries.
"""

import ctypes
import locale
import mmap
import os
from fractions import Fraction

import numpy as np
import pytest
import torch
import torchaudio

from laser_fairseq.data import synthesis
from laser_fairseq.data.frames import SILENCE, frame_centre, frame_count
from laser_fairseq.data.synthesis import PhoneEvent, RawSpeech, Voice

# espeak_GetParameter(parameter, current=1) reads back what espeak_SetParameter set (speak_lib.h)
PARAMETERS = {"rate": 1, "pitch": 3, "pitch_range": 4}


# --------------------------------------------------------------------------------- the library binding


def test_every_table_voice_is_selected_with_its_parameters():
    with synthesis.fresh_espeak() as espeak:
        assert espeak.version() == "1.52.0"
        get = espeak._lib.espeak_GetParameter
        get.argtypes, get.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        for voice in synthesis.VOICES:
            espeak.set_voice(voice)  # raises unless espeak selected exactly this file + variant
            assert {name: get(code, 1) for name, code in PARAMETERS.items()} == {
                "rate": voice.rate, "pitch": voice.pitch, "pitch_range": voice.pitch_range}, voice


def test_an_unknown_voice_is_an_error_not_a_silent_fallback():
    wrong = Voice("vx", "en-gb+f2", 50, 50, 175, "the British voice file is called 'en'")
    with pytest.raises(synthesis.EspeakError, match=r"vx: espeak-ng has no voice 'en-gb\+f2' \(EE_NOT_FOUND\)"):
        synthesis.synthesise_raw("Hello there.", wrong, 1)


@pytest.mark.parametrize("name, low, high", [("pitch", 0, 100), ("pitch_range", 0, 100), ("rate", 80, 450)])
def test_voice_settings_are_checked_at_their_bounds(name, low, high):
    settings = {"pitch": 50, "pitch_range": 50, "rate": 175}
    for value in (low, high):
        Voice("vx", "en-us", **dict(settings, **{name: value}), description="in range")
    for value in (low - 1, high + 1):
        with pytest.raises(ValueError, match=rf"voice vx: {name} must be in \[{low}, {high}\], got {value}"):
            Voice("vx", "en-us", **dict(settings, **{name: value}), description="out of range")


def test_a_voice_without_variant_works():
    plain = synthesis.synthesise_raw("Hello there.", Voice("vy", "en-us", 50, 50, 175, "no variant"), 1)
    assert plain.samples.size > 10_000 and plain.sample_rate == synthesis.ESPEAK_SAMPLE_RATE


def test_rate_and_pitch_reach_the_audio():
    text = "The brave otter swam past the bridge."
    slow = synthesis.synthesise_raw(text, Voice("vs", "en-us+m3", 50, 50, 100, "slow"), 1).samples.size
    fast = synthesis.synthesise_raw(text, Voice("vf", "en-us+m3", 50, 50, 300, "fast"), 1).samples.size
    assert 2.0 < slow / fast < 3.5


def test_an_utterance_does_not_depend_on_what_was_synthesised_before():
    text, voice = "Sixteen sisters sold the shiny sausages.", synthesis.VOICES[1]
    first = synthesis.synthesise_raw(text, voice, 5)
    synthesis.synthesise_raw("Completely different words, in another voice.", synthesis.VOICES[3], 9)
    again = synthesis.synthesise_raw(text, voice, 5)
    assert np.array_equal(first.samples, again.samples) and first.events == again.events
    # the seed reaches espeak's noise generator (this breathy variant uses it)
    assert not np.array_equal(first.samples, synthesis.synthesise_raw(text, voice, 6).samples)


def test_the_noise_seed_also_seeds_the_c_library():
    """espeak calls the C library's rand() besides its own generator: both are seeded per utterance."""
    def rand_after(seed):
        synthesis.synthesise_raw("The brave otter swam past the bridge.", synthesis.VOICES[0], seed)
        return synthesis._C_LIBRARY.rand()

    assert rand_after(5) == rand_after(5) != rand_after(6)
    assert rand_after(2**32 + 5) == rand_after(5)  # seeds are taken modulo 2**32


def test_a_sentence_pause_closes_every_utterance():
    raw = synthesis.synthesise_raw("The brave otter swam past the bridge.", synthesis.VOICES[0], 1)
    last_phone = max(event.sample for event in raw.events if event.name != SILENCE)
    closing = [event.sample for event in raw.events if event.sample > last_phone]
    assert (closing[-1] - closing[0]) / raw.sample_rate > 0.25  # espeak's end-of-sentence pause (ENDPAUSE)


def test_event_sample_and_millisecond_fields_agree():
    raw = synthesis.synthesise_raw("The brave otter swam past the bridge.", synthesis.VOICES[0], 1)
    for event in raw.events:
        # audio_position is the same instant truncated to whole milliseconds
        assert 0 <= event.sample * 1000 / raw.sample_rate - event.audio_position_ms < 1
    assert [e.sample for e in raw.events] == sorted(e.sample for e in raw.events)
    assert raw.events[-1].sample == raw.samples.size  # the closing pause event sits at the end of the output
    assert raw.events[-1].name == SILENCE
    assert raw.samples.dtype == np.int16 and np.abs(raw.samples).max() > 3_000


def test_phone_events_are_the_phonemiser_sequence():
    """The phones synthesis reports (pauses left out) are espeak's own phonemiser output for the text."""
    text, voice = "Did the curious tiger catch two shiny pencils?", synthesis.VOICES[4]
    raw = synthesis.synthesise_raw(text, voice, 1)
    with synthesis.fresh_espeak() as espeak:
        espeak.set_voice(voice)
        phonemised = espeak.text_to_phonemes(text)
    assert len(phonemised) > 20 and any(p[0] in synthesis.STRESS_MARKS for p in phonemised)
    spoken = [event.name for event in raw.events if event.name != SILENCE]
    assert spoken == [synthesis.normalise_phone(p) for p in phonemised]


@pytest.mark.parametrize("text", ["", " . ", "[[ ]]"])
def test_text_without_speech_is_an_error(text):
    """espeak answers such text with a pause (samples and pause events only): not an utterance."""
    with pytest.raises(synthesis.EspeakError, match="no speech or no phoneme events"):
        synthesis.synthesise_raw(text, synthesis.VOICES[0], 1)


def test_the_library_is_unloaded_after_use():
    library, data = synthesis.library_paths()
    assert os.path.isabs(library) and library == os.path.realpath(library) and os.path.isdir(data)
    assert not synthesis._is_mapped(library)
    with synthesis.fresh_espeak():
        assert synthesis._is_mapped(library)
    assert not synthesis._is_mapped(library)
    assert synthesis.espeak_version() == "1.52.0" and not synthesis._is_mapped(library)


def test_mapped_files_with_names_that_are_not_utf8_are_read(tmp_path):
    """/proc/self/maps holds raw path bytes: another mapping's odd name must not break the check."""
    odd = os.path.join(os.fsencode(str(tmp_path)), b"caf\xe9.bin")
    with open(odd, "wb") as handle:
        handle.write(b"\0" * 4096)
    with open(odd, "rb") as handle, mmap.mmap(handle.fileno(), 4096, prot=mmap.PROT_READ):
        library, _ = synthesis.library_paths()
        assert not synthesis._is_mapped(library)
        with synthesis.fresh_espeak():
            assert synthesis._is_mapped(library)


def test_mapped_files_with_non_ascii_names_are_found_under_an_ascii_locale(tmp_path):
    folder = tmp_path / "café"
    folder.mkdir()
    path = str(folder / "naïve.bin")
    with open(path, "wb") as handle:
        handle.write(b"\0" * 4096)
    previous = locale.setlocale(locale.LC_CTYPE)
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 4096, prot=mmap.PROT_READ):
        locale.setlocale(locale.LC_CTYPE, "C")  # /proc/self/maps is read as UTF-8 whatever the locale says
        try:
            assert synthesis._is_mapped(path)
        finally:
            locale.setlocale(locale.LC_CTYPE, previous)


def test_a_library_loaded_elsewhere_is_refused():
    library, _ = synthesis.library_paths()
    other = ctypes.CDLL(library)
    try:
        with pytest.raises(synthesis.EspeakError, match="already loaded in this process"):
            with synthesis.fresh_espeak():
                pass
    finally:
        import _ctypes

        _ctypes.dlclose(other._handle)
    assert not synthesis._is_mapped(library)


def event_list(*events):
    """A terminated espeak_EVENT array of (type, sample, audio_position, id bytes)."""
    array = (synthesis._Event * (len(events) + 1))()
    for slot, (kind, sample, position, name) in zip(array, events):
        slot.type, slot.sample, slot.audio_position, slot.id = kind, sample, position, name
    array[len(events)].type = synthesis._EVENT_LIST_TERMINATED
    return array


def test_the_callback_keeps_samples_and_phoneme_events_only():
    with synthesis.fresh_espeak() as espeak:
        buffer = (ctypes.c_short * 3)(7, -8, 9)
        wav = ctypes.cast(buffer, ctypes.POINTER(ctypes.c_short))  # what espeak hands over
        events = event_list((synthesis._EVENT_PHONEME, 12, 0, b"'aI"), (1, 13, 0, b"word"),
                            (synthesis._EVENT_PHONEME, 20, 1, b"_:"))
        assert espeak._collect(wav, 3, events) == 0
        assert espeak._collect(wav, 1, event_list()) == 0  # a single sample is kept too
        assert espeak._collect(None, 0, event_list()) == 0  # the last call of a synthesis: no samples
        assert espeak._collect(wav, 0, event_list()) == 0  # no chunk for 0 samples either
        buffer[0] = 100  # the chunk was copied out of espeak's buffer
        assert [chunk.tolist() for chunk in espeak._chunks] == [[7, -8, 9], [7]]
        assert espeak._events == [PhoneEvent(12, "aI", 0), PhoneEvent(20, "sil", 1)]
        assert espeak._callback_error is None
        assert espeak._collect(wav, 0, event_list((synthesis._EVENT_PHONEME, 30, 1, b"\xff\xfe"))) == 1
        assert isinstance(espeak._callback_error, UnicodeDecodeError)


def test_phone_names_are_normalised():
    assert synthesis.normalise_phone("'aI") == "aI" and synthesis.normalise_phone(",oU") == "oU"
    assert synthesis.normalise_phone("',a") == "a"
    assert synthesis.normalise_phone("_:") == "sil" and synthesis.normalise_phone("_") == "sil"
    assert synthesis.normalise_phone("'") == "sil"  # a stress mark alone names no phone
    assert synthesis.normalise_phone("t#") == "t#" and synthesis.normalise_phone("a_") == "a_"


# ------------------------------------------------------------------------------- 16 kHz audio + labels


def test_resampling_keeps_time_exactly():
    """Output sample n is the input signal at n / 16000 s: an analytic band-limited signal matches."""
    seconds = np.arange(22_050) / 22_050
    frequencies, phases = (190.0, 1_130.0, 3_400.0, 5_900.0), (0.3, 1.1, 2.0, 0.7)

    def signal(t):
        return sum(0.2 * np.sin(2 * np.pi * f * t + p) for f, p in zip(frequencies, phases))

    samples = np.round(signal(seconds) * 32768).astype(np.int16)
    output = synthesis.resample(samples, 22_050)
    assert output.size == 16_000 and output.dtype == np.float32
    expected = signal(np.arange(16_000) / 16_000)
    middle = slice(200, 15_800)
    assert np.max(np.abs(output[middle] - expected[middle])) < 5e-3
    # a misalignment of a tenth of a sample (6 us) would be far outside that tolerance
    assert np.max(np.abs(output[middle] - signal((np.arange(16_000) + 0.1) / 16_000)[middle])) > 0.03
    assert synthesis.resample(samples[:4_410], 22_050).size == 3_200  # 0.2 s -> ceil(4410 * 320 / 441)
    assert synthesis.resample(samples[:100], 22_050).size == 73  # ceil(72.56)


def test_resampling_keeps_int16_full_scale():
    """int16 full scale is 32768 both ways (to_int16 below): the gain against torchaudio's sinc resampler in
    float64 is 1 to 1e-6 (a scale one off, 32769, would give 1 - 3.05e-5)."""
    samples = np.random.default_rng(0).integers(-20_000, 20_000, 22_050).astype(np.int16)
    reference = torchaudio.functional.resample(torch.from_numpy(samples / 32768), 22_050, 16_000).numpy()
    output = synthesis.resample(samples, 22_050).astype(np.float64)
    assert abs(np.dot(output, reference) / np.dot(reference, reference) - 1) < 1e-6


def test_int16_conversion_rounds_and_clips():
    audio = np.array([0.0, 1.0, -1.0, 1.5, -1.5, 2.5 / 32768, -2.6 / 32768, 0.25, 1e-9], np.float32)
    assert synthesis.to_int16(audio).tolist() == [0, 32767, -32768, 32767, -32768, 2, -3, 8192, 0]
    assert synthesis.to_int16(audio).dtype == np.int16


def raw_speech(events, num_samples=2_205):
    return RawSpeech(samples=np.full(num_samples, 1_000, np.int16), sample_rate=22_050, events=tuple(events))


def test_phone_boundaries_are_exact_at_16_khz():
    """Event sample k at 22,050 Hz sits at 16 kHz sample edge + k * 320 / 441; zero-length phones give way."""
    raw = raw_speech([
        PhoneEvent(0, "sil", 0), PhoneEvent(441, "a", 20), PhoneEvent(441, "b", 20),
        PhoneEvent(1_000, "c", 45), PhoneEvent(2_205, "sil", 100),
    ])
    utterance = synthesis.to_utterance(raw, edge_silence=10)
    assert utterance.phone_starts == (Fraction(0), Fraction(10), Fraction(330), 10 + Fraction(1_000 * 320, 441),
                                      Fraction(1_610))
    assert utterance.phones == ("sil", "sil", "b", "c", "sil") and utterance.spoken == ("a", "b", "c")
    speech = synthesis.to_int16(synthesis.resample(raw.samples, 22_050))
    assert speech.size == 1_600 and utterance.samples.dtype == np.int16
    assert np.array_equal(utterance.samples, np.concatenate([np.zeros(10, np.int16), speech, np.zeros(10, np.int16)]))
    # the end of the speech closes the last phone with silence when no pause event sits there
    early = synthesis.to_utterance(raw_speech([PhoneEvent(441, "a", 20)]), edge_silence=0)
    assert early.phone_starts == (Fraction(0), Fraction(320), Fraction(1_600)) and early.phones == ("sil", "a", "sil")


def test_events_out_of_order_are_an_error():
    raw = raw_speech([PhoneEvent(900, "a", 40), PhoneEvent(800, "b", 36)])
    with pytest.raises(synthesis.EspeakError, match="phone events out of order: 'b'"):
        synthesis.to_utterance(raw, edge_silence=0)


def test_labels_follow_the_frame_centre_rule():
    starts = (Fraction(0), Fraction(1_000, 3), Fraction(600), Fraction(1_160))
    phones = ("sil", "a", "b", "sil")
    # 1,500 samples -> floor((1500 - 400) / 320) + 1 = 4 frames, centres 200, 520, 840, 1160; a phone starting
    # exactly on a centre covers it
    assert synthesis.frame_labels(starts, phones, 1_500) == ["sil", "a", "b", "sil"]
    assert synthesis.frame_labels((Fraction(0), Fraction(199), Fraction(201)), ("sil", "a", "b"), 400) == ["a"]
    assert synthesis.frame_labels(starts, phones, 399) == []
    assert frame_count(399) == 0 and frame_count(400) == 1 and frame_count(719) == 1
    assert frame_count(720) == 2 and frame_count(16_000) == 49
    assert frame_centre(0) == 200 and frame_centre(2) == 840
