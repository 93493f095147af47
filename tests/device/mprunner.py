# Runs every test_* function of one module under MicroPython and prints a result line for each.
# Usage: micropython mprunner.py <module>
import io
import json
import sys

try:
    import gc
except ImportError:
    gc = None


def main():
    name = sys.argv[1]
    mod = __import__(name)
    tests = sorted(k for k in dir(mod) if k.startswith("test_"))
    for t in tests:
        ok = True
        err = ""
        try:
            getattr(mod, t)()
        except Exception as e:
            ok = False
            buf = io.StringIO()
            sys.print_exception(e, buf)
            err = buf.getvalue()
        if gc:
            gc.collect()
        print("@@RESULT " + json.dumps({"name": t, "ok": ok, "error": err}))


main()
