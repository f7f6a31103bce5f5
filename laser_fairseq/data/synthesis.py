"""Speech and phone alignments from libespeak-ng, loaded from the ``espeakng-loader`` wheel through ctypes.

No system espeak-ng and no network: the wheel bundles ``libespeak-ng.so`` (1.52) and ``espeak-ng-data``.
Facts this module relies on (espeak-ng 1.52, ``speak_lib.h`` and ``MarkerEvent`` in ``speech.c``):

- ``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, ...)`` returns the output rate (22,050 Hz); in synchronous
  mode ``espeak_Synth`` calls our callback with int16 chunks and event lists before it returns.
- with ``espeakINITIALIZE_PHONEME_EVENTS`` every phoneme gives an ``espeakEVENT_PHONEME`` whose ``sample``
  is the index, counted from the start of the utterance's output, of the first sample generated for that
  phoneme (``audio_position`` is the same instant truncated to ms); ``id.string`` holds its mnemonic
  (up to 8 bytes, NUL-terminated when shorter), with stress marks (``'`` primary, ``,`` secondary) in front.
- ``espeak_SetVoiceByName`` takes a voice *file* name with an optional ``+variant`` ("en-us+m3"), returns
  ``EE_NOT_FOUND`` (2) for unknown names ("en-gb+f2": the British voice file is called "en") and then keeps
  the previous voice: every return code is checked and the selected voice's identifier compared.
- the library keeps hidden state from one utterance to the next (a pitch-flutter phase, noise generators),
  so the same call gives other samples after other calls. ``fresh_espeak`` loads a private instance and
  unloads it afterwards (checked in /proc/self/maps), so every utterance is synthesised from the same
  state: same text + voice + seed -> same samples, whatever was synthesised before and in which process.
  Noise is seeded with ``espeak_ng_SetRandSeed`` and the C library's ``srand`` (espeak also calls ``rand``).

Audio is resampled to 16 kHz with torchaudio's polyphase sinc resampler (22050:16000 = 441:320), whose output
sample ``n`` is the input signal at time ``n / 16000`` s, so an event at espeak sample ``k`` sits at 16 kHz
sample ``k * 320 / 441`` (kept exact, as a fraction).

Frame labels follow the upstream CNN (HuBERT / WavLM: 400-sample receptive field, 320-sample hop): ``S``
samples give ``T = floor((S - 400) / 320) + 1`` frames; frame ``t`` covers ``[320 t, 320 t + 400)`` and is
labelled with the phone that covers its centre sample ``320 t + 200``.
"""

import _ctypes
import ctypes
import os
from bisect import bisect_right
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchaudio

from .audio import SAMPLE_RATE
from .frames import SILENCE, frame_centre, frame_count

ESPEAK_SAMPLE_RATE = 22_050
STRESS_MARKS = "',"  # put in front of a stressed syllable's vowel by espeak's phoneme events

# speak_lib.h (API revision 12)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAMETER_RATE = 1
_PARAMETER_PITCH = 3
_PARAMETER_RANGE = 4
_ERRORS = {-1: "EE_INTERNAL_ERROR", 1: "EE_BUFFER_FULL", 2: "EE_NOT_FOUND"}


class EspeakError(RuntimeError):
    """libespeak-ng is missing, refused a call, or produced unusable output; the message says what to do."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak-ng voice file + variant with its pitch, pitch range and rate."""

    voice_id: str  # stable id used in file names and .voice files, e.g. "v03"
    espeak_name: str  # "<voice file>+<variant>", e.g. "en-gb-scotland+m1"
    pitch: int  # espeakPITCH, 0..100 (50 = the variant's normal base pitch)
    pitch_range: int  # espeakRANGE, 0..100 (0 = monotone, 50 = normal)
    rate: int  # espeakRATE, words per minute, 80..450
    description: str

    def __post_init__(self):
        for name, value, low, high in (("pitch", self.pitch, 0, 100), ("pitch_range", self.pitch_range, 0, 100),
                                       ("rate", self.rate, 80, 450)):
            if not low <= value <= high:
                raise ValueError(f"voice {self.voice_id}: {name} must be in [{low}, {high}], got {value}")


# Clearly different speakers: accent (voice file = phoneme rules and vowel qualities), variant (formant
# scaling, base pitch, voice quality; "klatt" variants use a different source model), pitch, range and
# rate. Ids are stable: a corpus made with --voices V uses the first V.
VOICES: Tuple[Voice, ...] = (
    Voice("v01", "en-us+m3", 45, 50, 170, "American English, male"),
    Voice("v02", "en+f2", 50, 60, 180, "British English, female"),
    Voice("v03", "en-gb-scotland+m1", 25, 40, 160, "Scottish English, male, deep and slow"),
    Voice("v04", "en-029+f4", 80, 70, 175, "Caribbean English, female, high, lively"),
    Voice("v05", "en-gb-x-rp+m7", 65, 45, 195, "Received Pronunciation, male, fast"),
    Voice("v06", "en-us+f5", 40, 35, 165, "American English, female, low, flat"),
    Voice("v07", "en-us-nyc+klatt", 80, 55, 185, "New York English, Klatt synthesiser, high"),
    Voice("v08", "en-gb-x-gbclan+m5", 30, 60, 175, "Lancaster English, male, low"),
    Voice("v09", "en-gb-x-gbcwmd+f1", 95, 50, 170, "West Midlands English, female, very high"),
    Voice("v10", "en-us+m6", 90, 65, 150, "American English, male, high, slow"),
    Voice("v11", "en+klatt4", 10, 40, 180, "British English, Klatt synthesiser, very low"),
    Voice("v12", "en-gb-x-rp+f3", 65, 45, 205, "Received Pronunciation, female, fast"),
)


@dataclass(frozen=True)
class PhoneEvent:
    sample: int  # first output sample of the phone, at the synthesiser's rate
    name: str  # espeak mnemonic with stress marks removed; pauses are SILENCE
    audio_position_ms: int  # espeak's own ms time of the same instant (truncated), kept as a cross-check


@dataclass(frozen=True)
class RawSpeech:
    """One utterance as espeak-ng produced it."""

    samples: np.ndarray  # (S,) int16 at sample_rate
    sample_rate: int
    events: Tuple[PhoneEvent, ...]  # in time order; silence before the first event is not an event


class _Event(ctypes.Structure):
    """espeak_EVENT of speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),  # union {int number; const char *name; char string[8]}
    ]


class _VoiceInfo(ctypes.Structure):
    """The leading fields of espeak_VOICE."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p)]


_C_LIBRARY = ctypes.CDLL(None)  # libespeak-ng calls the C library's rand() besides its own generator
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def library_paths() -> Tuple[str, str]:
    """(libespeak-ng.so, espeak-ng-data folder) of the installed espeakng-loader wheel."""
    try:
        import espeakng_loader
    except ImportError:
        raise EspeakError(
            "the Python package espeakng-loader is missing; install the project (make install) or "
            "`pip install espeakng-loader==0.2.4`"
        ) from None
    library, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    for path in (library, data):
        if not os.path.exists(path):
            raise EspeakError(f"{path} is missing: the espeakng-loader installation is incomplete; reinstall it")
    return os.path.realpath(library), data


def normalise_phone(mnemonic: str) -> str:
    """espeak mnemonic -> corpus phone symbol: stress marks dropped, pauses (``_``, ``_:``, ...) -> SILENCE."""
    name = mnemonic.lstrip(STRESS_MARKS)
    if not name or name.startswith("_"):
        return SILENCE
    return name


class Espeak:
    """A loaded, initialised libespeak-ng; get one from ``fresh_espeak``."""

    def __init__(self, library: ctypes.CDLL, sample_rate: int):
        self._lib = library
        self.sample_rate = sample_rate
        self._chunks: List[np.ndarray] = []
        self._events: List[PhoneEvent] = []
        self._callback_error: Optional[BaseException] = None  # ctypes would only print it and go on
        self._callback = _SynthCallback(self._collect)  # referenced here so it outlives every call
        library.espeak_SetSynthCallback(self._callback)

    def version(self) -> str:
        return self._lib.espeak_Info(None).decode()

    def set_voice(self, voice: Voice):
        """Select ``voice`` and its parameters; EspeakError when espeak refuses any of it."""
        code = self._lib.espeak_SetVoiceByName(voice.espeak_name.encode())
        if code != 0:
            raise EspeakError(
                f"voice {voice.voice_id}: espeak-ng has no voice {voice.espeak_name!r} "
                f"({_ERRORS.get(code, code)}); names are voice files + variant, e.g. 'en-us+m3' or 'en+f2'"
            )
        selected = self._lib.espeak_GetCurrentVoice().contents.identifier.decode()
        if not selected.lower().endswith(f"/{voice.espeak_name}".lower()):  # e.g. "gmw/en-US+m3" for "en-us+m3"
            raise EspeakError(f"voice {voice.voice_id}: asked for {voice.espeak_name!r}, espeak selected {selected!r}")
        for parameter, value, name in (
            (_PARAMETER_RATE, voice.rate, "rate"),
            (_PARAMETER_PITCH, voice.pitch, "pitch"),
            (_PARAMETER_RANGE, voice.pitch_range, "pitch_range"),
        ):
            code = self._lib.espeak_SetParameter(parameter, value, 0)
            if code != 0:
                raise EspeakError(f"voice {voice.voice_id}: espeak refused {name}={value} ({_ERRORS.get(code, code)})")

    def synthesise(self, text: str, noise_seed: int) -> RawSpeech:
        """Speak ``text`` (UTF-8, plain text) with the selected voice and a sentence pause at the end."""
        self._chunks, self._events, self._callback_error = [], [], None
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(noise_seed))
        _C_LIBRARY.srand(ctypes.c_uint(noise_seed & 0xFFFFFFFF))
        encoded = text.encode("utf-8") + b"\0"
        code = self._lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
        if code != 0:
            raise EspeakError(f"espeak_Synth failed ({_ERRORS.get(code, code)}) for {text!r}")
        if self._callback_error is not None:
            raise EspeakError(f"reading espeak's output for {text!r} failed") from self._callback_error
        if not self._chunks or all(event.name == SILENCE for event in self._events):  # e.g. "" gives a pause
            raise EspeakError(f"espeak produced no speech or no phoneme events for {text!r}")
        return RawSpeech(samples=np.concatenate(self._chunks), sample_rate=self.sample_rate, events=tuple(self._events))

    def text_to_phonemes(self, text: str) -> List[str]:
        """espeak's phonemiser (``espeak_TextToPhonemes``, mnemonics) for the selected voice, stress kept."""
        separator = ord(" ") << 8
        buffer = ctypes.create_string_buffer(text.encode("utf-8"))
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        phonemes: List[str] = []
        while pointer.value:
            clause = self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, separator)
            phonemes.extend(clause.decode().split())
        return phonemes

    def _collect(self, wav, num_samples, events) -> int:
        """espeak's synth callback: keep the samples and phoneme events; 1 aborts synthesis after an error."""
        try:
            if wav and num_samples > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
            index = 0
            while events[index].type != _EVENT_LIST_TERMINATED:
                event = events[index]
                if event.type == _EVENT_PHONEME:
                    name = normalise_phone(event.id.decode("utf-8"))
                    self._events.append(PhoneEvent(event.sample, name, event.audio_position))
                index += 1
        except BaseException as error:  # noqa: B902 - handed back to synthesise(), which raises it
            self._callback_error = error
            return 1
        return 0


def _declare(library: ctypes.CDLL):
    library.espeak_Initialize.restype = ctypes.c_int
    library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    library.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    library.espeak_GetCurrentVoice.restype = ctypes.POINTER(_VoiceInfo)
    library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    library.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.c_void_p, ctypes.c_void_p,
    ]
    library.espeak_TextToPhonemes.restype = ctypes.c_char_p
    library.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    library.espeak_Info.restype = ctypes.c_char_p
    library.espeak_Info.argtypes = [ctypes.c_void_p]


def _is_mapped(path: str) -> bool:
    """Whether the shared object ``path`` (a real path) is loaded in this process (Linux /proc)."""
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        return f" {path}\n" in maps.read()


@contextmanager
def fresh_espeak() -> Iterator[Espeak]:
    """A freshly loaded libespeak-ng for a few calls; unloaded afterwards so the next one starts clean."""
    library_path, data_path = library_paths()
    if _is_mapped(library_path):
        raise EspeakError(
            f"{library_path} is already loaded in this process (by another module?): its hidden state would "
            f"make utterances depend on each other; synthesise in a process that does not load it elsewhere"
        )
    library = ctypes.CDLL(library_path)
    sample_rate = -1
    try:
        _declare(library)
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        sample_rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, os.path.dirname(data_path).encode(), options)
        if sample_rate != ESPEAK_SAMPLE_RATE:
            raise EspeakError(
                f"espeak_Initialize with data in {data_path} returned {sample_rate}, expected "
                f"{ESPEAK_SAMPLE_RATE} (Hz); is espeakng-loader 0.2.4 installed?"
            )
        yield Espeak(library, sample_rate)
    finally:
        if sample_rate > 0:
            library.espeak_Terminate()
        _ctypes.dlclose(library._handle)
    if _is_mapped(library_path):
        raise EspeakError(f"{library_path} stayed loaded after dlclose; utterances would depend on each other")


def synthesise_raw(text: str, voice: Voice, noise_seed: int) -> RawSpeech:
    """``text`` in ``voice`` from a fresh library state (about 10 ms for a sentence)."""
    with fresh_espeak() as espeak:
        espeak.set_voice(voice)
        return espeak.synthesise(text, noise_seed)


def espeak_version() -> str:
    with fresh_espeak() as espeak:
        return espeak.version()


# ----------------------------------------------------------------------------------- 16 kHz audio + labels


@lru_cache(maxsize=2)
def _resampler(orig_freq: int, new_freq: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig_freq, new_freq)


def resample(samples: np.ndarray, orig_freq: int, new_freq: int = SAMPLE_RATE) -> np.ndarray:
    """(S,) int16 -> (ceil(S * new / orig),) float32 in [-1, 1]; output n = input signal at n / new_freq s."""
    waveform = torch.from_numpy(samples.astype(np.float32) / 32768.0)
    with torch.no_grad():
        return _resampler(orig_freq, new_freq)(waveform).numpy()


def to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class Utterance:
    """16 kHz speech with exact phone boundaries."""

    samples: np.ndarray  # (S,) int16 at SAMPLE_RATE
    phone_starts: Tuple[Fraction, ...]  # start of each phone, in 16 kHz samples (exact); first is 0
    phones: Tuple[str, ...]  # phone of each interval [phone_starts[i], phone_starts[i + 1]); SILENCE for pauses
    spoken: Tuple[str, ...]  # every phone event in order, pauses left out (= espeak's phonemiser output)


def to_utterance(raw: RawSpeech, edge_silence: int) -> Utterance:
    """Resample ``raw`` to 16 kHz and add ``edge_silence`` zero samples at both ends (labelled SILENCE)."""
    speech = to_int16(resample(raw.samples, raw.sample_rate))
    padding = np.zeros(edge_silence, np.int16)
    samples = np.concatenate([padding, speech, padding])
    ratio = Fraction(SAMPLE_RATE, raw.sample_rate)
    starts: List[Fraction] = [Fraction(0)]
    phones: List[str] = [SILENCE]
    boundaries = [(edge_silence + event.sample * ratio, event.name) for event in raw.events]
    for start, phone in boundaries + [(Fraction(edge_silence + speech.size), SILENCE)]:
        if start < starts[-1]:
            raise EspeakError(f"phone events out of order: {phone!r} at {float(start)} after {float(starts[-1])}")
        if start == starts[-1]:  # the earlier phone has no duration: the later one covers the interval
            phones[-1] = phone
        else:
            starts.append(start)
            phones.append(phone)
    spoken = tuple(event.name for event in raw.events if event.name != SILENCE)
    return Utterance(samples=samples, phone_starts=tuple(starts), phones=tuple(phones), spoken=spoken)


def frame_labels(phone_starts: Sequence[Fraction], phones: Sequence[str], num_samples: int) -> List[str]:
    """The phone covering the centre sample (``frames.frame_centre``) of each of the ``frame_count`` frames."""
    return [phones[bisect_right(phone_starts, frame_centre(frame)) - 1] for frame in range(frame_count(num_samples))]
