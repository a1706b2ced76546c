"""Reference implementations kept outside the library: plain, slow versions of what ``wemem.ml``
does fast, used as the yardstick of the benchmarks and as a check in the tests."""
