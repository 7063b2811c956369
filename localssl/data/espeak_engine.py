"""eSpeak NG through its C API, loaded with ctypes from the optional extra's wheel (``espeakng-loader``):
``espeak_Initialize`` in retrieval mode with phoneme events, ``espeak_SetVoiceByName``,
``espeak_SetParameter`` (rate, pitch, pitch range) and a synthesis callback that collects the 22 050 Hz
samples and each phoneme's start sample. :mod:`localssl.data.espeak` builds the corpus on it. eSpeak NG is
GPL-3.0 and is loaded at run time only."""

from __future__ import annotations

import ctypes

import numpy as np

from localssl.data.base import DatasetError

ESPEAK_RATE = 22050
EXTRA_MISSING = (
    "the eSpeak speech corpus needs the optional extra: pip install 'localssl[speech]' "
    "(espeakng-loader, GPL-3.0, and scipy)"
)


class _Event(ctypes.Structure):  # espeak_EVENT (speak_lib.h)
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_EVENT_PHONEME, _RATE, _PITCH, _RANGE = 7, 1, 3, 4
_ENGINE: Espeak | None = None


def espeak_available() -> bool:
    """Whether the optional extra (``espeakng-loader`` and ``scipy``) is installed."""
    try:
        import espeakng_loader  # noqa: F401
        import scipy.signal  # noqa: F401
    except ImportError:
        return False
    return True


class Espeak:
    """eSpeak NG loaded with ctypes from ``espeakng-loader``'s wheel, in retrieval mode with phoneme events.
    One per process (:func:`engine`): the library keeps global state."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:
            raise DatasetError(EXTRA_MISSING) from err
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Info.restype = ctypes.c_char_p
        # AUDIO_OUTPUT_RETRIEVAL (1), default buffer, the wheel's data, espeakINITIALIZE_PHONEME_EVENTS (1)
        rate = self.lib.espeak_Initialize(1, 0, espeakng_loader.get_data_path().encode(), 1)
        if rate != ESPEAK_RATE:
            raise DatasetError(f"eSpeak NG initialised at {rate} Hz, expected {ESPEAK_RATE}")
        self.version = self.lib.espeak_Info(None).decode()
        self._audio: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._callback = _CALLBACK(self._receive)  # kept alive as long as the engine
        self.lib.espeak_SetSynthCallback(self._callback)

    def _receive(self, wav, n: int, events) -> int:
        if wav and n > 0:
            self._audio.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != 0:  # espeakEVENT_LIST_TERMINATED
            if events[i].type == _EVENT_PHONEME:
                self._events.append((events[i].id.decode(), int(events[i].sample)))
            i += 1
        return 0

    def synthesize(
        self, text: str, voice: str, rate: int, pitch: int, pitch_range: int, noise_seed: int = 0
    ) -> tuple[np.ndarray, list]:
        """int16 audio at 22 050 Hz and ``[(phoneme, start sample), ...]`` of ``text`` spoken by ``voice``.
        ``noise_seed`` seeds eSpeak NG's own random generator first (``espeak_ng_SetRandSeed``): it is seeded from
        the clock when the library starts, and the breath noise of some voice variants (``+f2``, ``+f3``) is
        drawn from it, so without a seed those utterances differ from one generation to the next."""
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(noise_seed))
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise DatasetError(f"eSpeak NG has no voice '{voice}'")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            self.lib.espeak_SetParameter(param, value, 0)
        self._audio, self._events = [], []
        data = text.encode()
        if self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 0, None, None) != 0:
            raise DatasetError(f"eSpeak NG could not synthesise {text!r}")
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self._audio) if self._audio else np.zeros(0, np.int16)
        return audio.astype(np.int16), list(self._events)


def engine() -> Espeak:
    """The process's eSpeak NG engine (loaded on first use; :data:`EXTRA_MISSING` if the extra is absent)."""
    global _ENGINE
    if _ENGINE is None:
        if not espeak_available():
            raise DatasetError(EXTRA_MISSING)
        _ENGINE = Espeak()
    return _ENGINE


def loaded() -> bool:
    """Whether this process has loaded eSpeak NG already (its state would leak into forked workers)."""
    return _ENGINE is not None
