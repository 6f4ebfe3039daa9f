"""GitHub-flavoured markdown to HTML through cmark-gfm, freeing what cmark allocates.

cmarkgfm's own wrappers (2025.10.22) never free the document tree that
`cmark_parser_finish` hands over, nor the buffer `cmark_render_html` returns: about 60 KB
leaked per 9 KB article (measured), which made a server importing articles grow by
gigabytes. This renders through the same bundled library, with the same extensions and
options as `cmarkgfm.github_flavored_markdown_to_html`, and frees both. The two functions
cmarkgfm's binding does not declare are declared here and looked up in the same loaded
library (and `free` in libc, which cmark's default allocator uses).

`_cmark` is private, so pyproject bounds cmarkgfm's version and `check_abi` (run on import,
so at start-up) fails with the missing names rather than crashing on the first article.
"""

from __future__ import annotations

import threading
from importlib import metadata
from typing import Any

import cffi
import cmarkgfm
from cmarkgfm import _cmark  # pyright: ignore[reportAttributeAccessIssue]  # compiled cffi module
from cmarkgfm.cmark import Options

_ffi = cffi.FFI()
_ffi.cdef("void cmark_node_free(void *node); void free(void *ptr);")
_cmark_so: Any = _ffi.dlopen(_cmark.__file__)  # a cffi Lib: its attributes come from cdef
_libc: Any = _ffi.dlopen(None)  # type: ignore[arg-type]  # the process's own symbols: libc's free
_lib, _cffi = _cmark.lib, _cmark.ffi

_OPTIONS = Options.CMARK_OPT_GITHUB_PRE_LANG  # raw HTML and javascript: links left out
_EXTENSION_NAMES = (b"table", b"autolink", b"tagfilter", b"strikethrough", b"tasklist")
_extensions: list = []
_registered = threading.Lock()
# What this module calls in cmarkgfm's compiled binding.
_BINDING_FUNCTIONS = (
    "cmark_parser_new", "cmark_parser_free", "cmark_parser_feed", "cmark_parser_finish",
    "cmark_parser_attach_syntax_extension", "cmark_parser_get_syntax_extensions",
    "cmark_render_html", "cmark_find_syntax_extension",
    "cmark_gfm_core_extensions_ensure_registered",
)  # fmt: skip
_ABI_SAMPLE = "# T\n\n~~gone~~ www.example.com\n\n| a |\n| - |\n| 1 |\n\n- [x] done\n"


def _syntax_extensions() -> list:
    with _registered:
        if not _extensions:
            _lib.cmark_gfm_core_extensions_ensure_registered()
            for name in _EXTENSION_NAMES:
                extension = _lib.cmark_find_syntax_extension(name)
                if extension == _cffi.NULL:
                    raise RuntimeError(f"cmark-gfm has no {name.decode()} extension")
                _extensions.append(extension)
    return _extensions


def _void(pointer: object) -> object:
    """A pointer of cmarkgfm's FFI as a void * of ours."""
    return _ffi.cast("void *", int(_cffi.cast("uintptr_t", pointer)))


def render_html(markdown: str) -> str:
    text = markdown.encode("utf-8")
    parser = _lib.cmark_parser_new(_OPTIONS)
    try:
        for extension in _syntax_extensions():
            _lib.cmark_parser_attach_syntax_extension(parser, extension)
        _lib.cmark_parser_feed(parser, text, len(text))
        root = _lib.cmark_parser_finish(parser)  # ours to free
        try:
            raw = _lib.cmark_render_html(
                root, _OPTIONS, _lib.cmark_parser_get_syntax_extensions(parser)
            )
            try:
                return _cffi.string(raw).decode("utf-8")
            finally:
                _libc.free(_void(raw))
        finally:
            _cmark_so.cmark_node_free(_void(root))
    finally:
        _lib.cmark_parser_free(parser)


def check_abi() -> None:
    """Raise RuntimeError, naming what is wrong, unless the binding still has the functions
    used here and renders like cmarkgfm's own (leaking) wrapper."""
    missing = [name for name in _BINDING_FUNCTIONS if not hasattr(_lib, name)]
    try:
        _cmark_so.cmark_node_free  # noqa: B018  # looked up in the loaded library
    except AttributeError:
        missing.append("cmark_node_free")
    if missing:
        raise RuntimeError(
            f"cmarkgfm {metadata.version('cmarkgfm')} lacks {', '.join(missing)}: "
            "storage/markdown.py needs the version pyproject pins"
        )
    if render_html(_ABI_SAMPLE) != cmarkgfm.github_flavored_markdown_to_html(_ABI_SAMPLE):
        raise RuntimeError("storage/markdown.py renders unlike cmarkgfm: its ABI changed")


check_abi()
