"""The denylist of the pickle policy: what reaches code, files, network or global state.

``DANGEROUS`` maps module or callable prefixes to a severity and what loading
them would do; the longest prefix wins, and ``DANGEROUS_EXCEPTIONS`` carves
data-only names out of dangerous modules. The name sets catch danger reached by
attribute traversal (``torch.serialization.os.system``). Anything on neither
list is an unknown global: the policy is allowlist first, so a callable
missing here is still reported.
"""

from __future__ import annotations

from trainguard.findings import Severity


def _w(text: str) -> list[str]:
    return text.split()


C = Severity.CRITICAL
H = Severity.HIGH

#: Builtins that run code, reach other objects or touch files: CRITICAL.
BUILTINS_CRITICAL: dict[str, str] = {
    "eval": "evaluates a Python expression given as a string",
    "exec": "executes Python statements given as a string",
    "execfile": "executes a Python file",
    "compile": "compiles Python source into a code object",
    "open": "opens (and can truncate or create) an arbitrary file",
    "getattr": "fetches any attribute of any object (os.system from os, etc.)",
    "setattr": "overwrites any attribute of any object or module",
    "delattr": "deletes any attribute of any object or module",
    "__import__": "imports an arbitrary module by name",
    "breakpoint": "starts a debugger",
    "input": "reads from standard input (hangs unattended jobs)",
    "globals": "returns the module globals (a way to reach any name)",
    "locals": "returns the local namespace",
    "vars": "returns an object's namespace (a way to reach any name)",
    "exit": "terminates the process",
    "quit": "terminates the process",
    "help": "starts the interactive help system (runs a pager)",
    "__build_class__": "creates classes from code",
    "apply": "calls any callable with arguments (Python 2 name)",
    "reload": "re-executes a module",
}

#: Builtins that are gadgets: they call their arguments or build classes.
BUILTINS_GADGET: frozenset[str] = frozenset(
    _w(
        "map filter sorted min max sum any all iter next type super classmethod staticmethod "
        "property dir hasattr isinstance issubclass id hash callable format repr ascii"
    )
)

_CODE = "executes arbitrary Python code"
_SHELL = "runs shell commands or spawns processes"
_IMPORT = "imports arbitrary modules by name (reaches os.system and everything else)"
_NESTED = "deserializes embedded data with a full unpickler (arbitrary code execution)"
_FILES = "reads, writes or deletes files"
_NET = "opens network connections (exfiltration, downloads)"

#: Dangerous modules and callables: longest matching prefix wins.
DANGEROUS: dict[str, tuple[Severity, str]] = {
    # processes and the operating system
    "os": (C, "operating-system interface: " + _SHELL + ", deletes files, changes the environment"),
    "posix": (C, "low-level OS interface (os.system, exec*, kill)"),
    "nt": (C, "low-level Windows OS interface (os.system, spawn*, startfile)"),
    "subprocess": (C, _SHELL),
    "commands": (C, _SHELL + " (Python 2 commands module)"),
    "popen2": (C, _SHELL + " (Python 2 popen2 module)"),
    "_posixsubprocess": (C, "forks and executes a process directly"),
    "pty": (C, "spawns a process on a pseudo-terminal (pty.spawn)"),
    "sys": (C, "interpreter internals: exit, sys.modules patching, tracing hooks"),
    "builtins": (C, "Python builtins"),
    "__builtin__": (C, "Python builtins (Python 2 name)"),
    "signal": (H, "sends signals / installs handlers (kills or stalls jobs)"),
    "_signal": (H, "sends signals / installs handlers (kills or stalls jobs)"),
    "resource": (H, "changes process resource limits"),
    "platform": (H, "runs helper commands (platform.popen in old versions)"),
    "_osx_support": (C, _SHELL + " (_read_output runs a command)"),
    "_aix_support": (C, _SHELL),
    "uuid._get_command_stdout": (C, _SHELL),
    "_pyrepl": (C, "interactive console and pager that run commands"),
    "mailcap": (C, "runs mailcap 'test' commands through os.system"),
    "multiprocessing": (C, "spawns processes and runs callables in them"),
    "concurrent": (H, "runs callables in thread or process pools"),
    "threading": (H, "runs callables in threads"),
    "_thread": (C, "start_new_thread calls any callable with arguments"),
    "_interpreters": (C, "runs Python source in a sub-interpreter"),
    "_xxsubinterpreters": (C, "runs Python source in a sub-interpreter"),
    "atexit": (H, "registers callables to run at exit"),
    "sched": (H, "schedules callables"),
    "asyncio": (C, "event loop with subprocess and network helpers"),
    "ctypes": (C, "loads native libraries and calls C functions / writes raw memory"),
    "_ctypes": (C, "loads native libraries and calls C functions / writes raw memory"),
    "cffi": (C, "loads native libraries and calls C functions"),
    "mmap": (H, "maps files into memory for reading and writing"),
    "fcntl": (H, "file-descriptor control"),
    "termios": (H, "terminal control"),
    "pwd": (H, "reads the password database"),
    "grp": (H, "reads the group database"),
    "spwd": (H, "reads the shadow password database"),
    "gc": (H, "reaches every live object (sandbox escape gadget)"),
    "inspect": (H, "reaches frames, globals and source of live objects"),
    # running code
    "code": (C, _CODE + " (InteractiveInterpreter.runsource/runcode)"),
    "codeop": (C, "compiles Python source"),
    "runpy": (C, _CODE + " (runs modules and files)"),
    "importlib": (C, _IMPORT),
    "imp": (C, _IMPORT),
    "zipimport": (C, "imports modules from arbitrary zip files"),
    "pkgutil": (C, _IMPORT + " (pkgutil.resolve_name)"),
    "pydoc": (C, _IMPORT + "; pydoc.pipepager runs a shell command"),
    "site": (C, "processes .pth files and site directories (runs code)"),
    "marshal": (C, "deserializes code objects"),
    "types": (C, "builds code objects, functions and modules from data"),
    "cProfile": (C, _CODE + " (cProfile.run/runctx)"),
    "profile": (C, _CODE + " (profile.run/runctx)"),
    "pstats": (H, "loads marshalled profile data"),
    "pdb": (C, _CODE + " under a debugger (pdb.run)"),
    "bdb": (C, _CODE + " (Bdb.run)"),
    "timeit": (C, _CODE + " (timeit.timeit compiles and runs a statement)"),
    "trace": (C, _CODE + " (Trace.run/runctx)"),
    "doctest": (C, _CODE + " (doctest.debug_script)"),
    "idlelib": (C, _CODE + " (IDLE shells, calltips and autocompletion eval strings)"),
    "lib2to3": (C, _CODE + " (grammar loading and parser generator eval strings)"),
    "ast": (H, "parses and compiles Python source"),
    "compileall": (H, "compiles and writes .pyc files"),
    "py_compile": (H, "compiles and writes .pyc files"),
    "functools.reduce": (C, "calls a function repeatedly (a call gadget)"),
    "functools.partial": (H, "binds a callable to arguments for a later call (a call gadget)"),
    "functools.partialmethod": (H, "binds a callable to arguments for a later call"),
    "functools.singledispatch": (H, "wraps callables"),
    "operator": (H, "operator functions call, fetch and set attributes and items (gadgets)"),
    "_operator": (H, "operator functions call, fetch and set attributes and items (gadgets)"),
    "operator.attrgetter": (H, "fetches arbitrary (dotted) attributes: reaches os.system"),
    "_operator.attrgetter": (H, "fetches arbitrary (dotted) attributes: reaches os.system"),
    "operator.methodcaller": (H, "calls an arbitrary method by name"),
    "_operator.methodcaller": (H, "calls an arbitrary method by name"),
    "operator.call": (C, "calls any callable with arguments"),
    "_operator.call": (C, "calls any callable with arguments"),
    "itertools.starmap": (H, "calls a function over arguments when iterated (a call gadget)"),
    "copy": (H, "copying calls __reduce__/__deepcopy__ of arbitrary objects"),
    "logging.config": (C, "instantiates arbitrary classes from a config (dictConfig, listen)"),
    "logging": (H, "creates handlers that open files and sockets"),
    "string.Formatter": (H, "format strings reach attributes of arguments"),
    "builtins.__dict__": (C, "the builtins namespace"),
    # nested deserializers
    "pickle": (C, _NESTED),
    "_pickle": (C, _NESTED),
    "cPickle": (C, _NESTED),
    "pickletools": (H, "pickle tooling"),
    "shelve": (C, _NESTED + " (shelve stores pickles)"),
    "dbm": (H, "opens database files"),
    "cloudpickle": (C, _NESTED + "; rebuilds functions from bytecode"),
    "dill": (C, _NESTED + "; rebuilds functions and code objects"),
    "joblib": (H, "joblib helpers (parallel execution, caching, loading)"),
    "joblib.load": (C, _NESTED),
    "joblib.numpy_pickle.load": (C, _NESTED),
    "joblib.externals": (C, "vendored cloudpickle/loky: rebuilds functions, spawns processes"),
    "joblib.parallel": (C, "runs callables in worker processes"),
    "joblib.Parallel": (C, "runs callables in worker processes"),
    "numpy.load": (C, _NESTED + " (numpy.load with allow_pickle)"),
    "numpy.lib.npyio": (H, "numpy file I/O (load with allow_pickle, save)"),
    "numpy.lib._npyio_impl": (H, "numpy file I/O (load with allow_pickle, save)"),
    "numpy.lib.npyio.load": (C, _NESTED),
    "numpy.lib._npyio_impl.load": (C, _NESTED),
    "numpy.lib.format": (H, "reads and writes .npy files (may unpickle object arrays)"),
    "numpy.loads": (C, _NESTED),
    "numpy.fromfile": (H, _FILES),
    "numpy.tofile": (H, _FILES),
    "numpy.save": (H, _FILES),
    "numpy.savez": (H, _FILES),
    "numpy.savetxt": (H, _FILES),
    "numpy.loadtxt": (H, _FILES),
    "numpy.genfromtxt": (H, _FILES),
    "numpy.memmap": (H, "maps (and can create or overwrite) a file"),
    "numpy.testing": (C, _CODE + " (numpy.testing._private.utils.runstring)"),
    "numpy.f2py": (C, _CODE + " (f2py evaluates Fortran expressions with eval)"),
    "numpy.distutils": (C, _SHELL + " (build helpers)"),
    "numpy.ctypeslib": (C, "loads native libraries"),
    # torch internals that run code, load or reconfigure
    "torch.load": (C, _NESTED + " (torch.load)"),
    "torch.serialization": (H, "torch serialization internals"),
    "torch.serialization.load": (C, _NESTED + " (torch.load)"),
    "torch.serialization._legacy_load": (C, _NESTED),
    "torch.serialization.add_safe_globals": (
        C,
        "weakens every later weights_only load in the process",
    ),
    "torch.serialization.safe_globals": (C, "weakens weights_only loads in the process"),
    "torch.serialization.register_package": (C, "registers a deserializer for later loads"),
    "torch._weights_only_unpickler": (C, "tampers with the weights_only unpickler"),
    "torch.storage._load_from_bytes": (
        H,
        "runs torch.load(weights_only=False) on embedded bytes (scanned as nested content)",
    ),
    "torch.hub": (C, "downloads and runs code from a hub repository"),
    "torch.jit": (C, "loads or compiles TorchScript code (execWrapper runs Python source)"),
    "torch._dynamo": (C, _CODE + " (guards evaluate strings)"),
    "torch._inductor": (C, "compiles and loads native code (codecache.compile_file)"),
    "torch.fx": (C, _CODE + " (GraphModule code generation, symbolic shapes evaluate strings)"),
    "torch.package": (C, "imports code shipped inside a package archive"),
    "torch.utils.cpp_extension": (C, "compiles and loads native extensions"),
    "torch.utils.collect_env": (C, _SHELL + " (collect_env.run)"),
    "torch.utils.bottleneck": (C, _CODE + " (bottleneck runs profilers over code)"),
    "torch.utils._config_module": (C, _NESTED + " (ConfigModule.load_config unpickles)"),
    "torch.utils.data.datapipes.utils.decoder": (C, _NESTED + " (basichandlers unpickles)"),
    "torch.utils.data": (H, "data loading utilities (workers, file and network access)"),
    "torch.utils.model_zoo": (C, "downloads and loads checkpoints"),
    "torch.utils.hooks": (H, "registers hooks"),
    "torch.multiprocessing": (H, "shares storages between processes (file descriptors)"),
    "torch.distributed": (H, "joins process groups over the network"),
    "torch.distributed.rpc": (C, "runs remote procedure calls"),
    "torch.ops": (H, "calls arbitrary registered operators"),
    "torch._ops": (H, "calls arbitrary registered operators"),
    "torch.library": (C, "registers operator implementations for every later call"),
    "torch._C": (H, "low-level torch bindings"),
    "torch._C._jit": (C, "TorchScript compiler internals"),
    "torch.classes": (H, "loads custom C++ classes"),
    "torch.compile": (H, "compiles code"),
    "torch.backends": (H, "changes process-wide numerics and kernel selection"),
    "torch.nn.modules.module.register_module": (
        C,
        "installs a global hook on every module (silent training manipulation)",
    ),
    "torch.optim.optimizer.register_optimizer": (
        C,
        "installs a global optimizer hook (silently changes every update)",
    ),
    "torch.autograd.graph": (H, "installs autograd hooks"),
    "torch.autograd.set_grad_enabled": (H, "changes process-wide training state"),
    "torch.manual_seed": (H, "reseeds the global RNG (changes every later run)"),
    "torch.seed": (H, "reseeds the global RNG"),
    "torch.set_rng_state": (H, "replaces the global RNG state"),
    "torch.random": (H, "changes the global RNG state"),
    "torch.cuda.manual_seed": (H, "reseeds the CUDA RNG"),
    "torch.cuda.manual_seed_all": (H, "reseeds the CUDA RNG"),
    "torch.cuda.set_rng_state": (H, "replaces the CUDA RNG state"),
    "torch.cuda.set_rng_state_all": (H, "replaces the CUDA RNG state"),
    "torch.set_default_dtype": (H, "changes the process-wide default dtype"),
    "torch.set_default_device": (H, "changes the process-wide default device"),
    "torch.set_default_tensor_type": (H, "changes the process-wide default tensor type"),
    "torch.set_flush_denormal": (H, "changes process-wide numerics"),
    "torch.set_num_threads": (H, "changes process-wide threading"),
    "torch.set_num_interop_threads": (H, "changes process-wide threading"),
    "torch.set_grad_enabled": (H, "changes process-wide training state"),
    "torch.set_anomaly_enabled": (H, "changes process-wide training state"),
    "torch.use_deterministic_algorithms": (H, "changes process-wide determinism"),
    "torch.set_deterministic_debug_mode": (H, "changes process-wide determinism"),
    "torch.set_float32_matmul_precision": (H, "changes process-wide numerics"),
    "random.seed": (H, "reseeds the global RNG"),
    "random.setstate": (H, "replaces the global RNG state"),
    "numpy.random.seed": (H, "reseeds numpy's global RNG"),
    "numpy.random.set_state": (H, "replaces numpy's global RNG state"),
    "numpy.random.mtrand.seed": (H, "reseeds numpy's global RNG"),
    "numpy.random.mtrand.set_state": (H, "replaces numpy's global RNG state"),
    "transformers.dynamic_module_utils": (C, "downloads and imports remote model code"),
    "huggingface_hub": (H, "downloads from or uploads to the Hugging Face Hub"),
    "mlflow": (H, "MLflow helpers (projects run entry points as commands)"),
    "mlflow.projects": (C, _SHELL + " (runs project entry points)"),
    "pandas.io": (H, "reads files and URLs"),
    "pandas.read_csv": (H, "reads files and URLs"),
    "pandas.read_pickle": (C, _NESTED),
    "pandas.io.pickle": (C, _NESTED),
    "yaml": (H, "YAML loaders that can construct arbitrary Python objects"),
    "yaml.unsafe_load": (C, _CODE + " (unsafe YAML tags construct any object)"),
    "keras.saving": (H, "deserializes Keras objects (Lambda layers run code)"),
    # files
    "shutil": (C, "copies, moves and deletes files and trees"),
    "tempfile": (H, "creates files and directories"),
    "io": (H, "opens files (io.open, FileIO)"),
    "_io": (H, "opens files (FileIO, open)"),
    "codecs.open": (H, _FILES),
    "fileinput": (H, _FILES),
    "glob": (H, "lists the file system"),
    "tarfile": (H, "extracts archives (writes files)"),
    "zipfile": (H, "extracts archives (writes files)"),
    "gzip.open": (H, _FILES),
    "bz2.open": (H, _FILES),
    "lzma.open": (H, _FILES),
    "sqlite3": (H, "opens or creates database files (extensions load native code)"),
    "linecache": (H, "reads arbitrary files"),
    "filecmp": (H, "reads arbitrary files"),
    "distutils": (C, _SHELL + " and writes files (distutils.spawn, file_util.write_file)"),
    "setuptools": (C, _SHELL + " (build and install commands)"),
    "pip": (C, "installs packages (pip.main): runs setup code from the network"),
    "ensurepip": (C, "runs pip (ensurepip._run_pip)"),
    "venv": (C, "creates environments and runs pip"),
    "webbrowser": (C, "launches a browser process"),
    "antigravity": (H, "opens a web browser on import"),
    "this": (H, "prints on import"),
    # network
    "socket": (C, _NET + " (reverse shells)"),
    "_socket": (C, _NET + " (reverse shells)"),
    "socketserver": (H, _NET),
    "ssl": (H, _NET),
    "select": (H, "waits on sockets"),
    "selectors": (H, "waits on sockets"),
    "http": (H, _NET),
    "urllib": (H, _NET),
    "urllib2": (H, _NET),
    "urllib3": (H, _NET),
    "httplib": (H, _NET),
    "requests": (H, _NET),
    "httpx": (H, _NET),
    "aiohttp": (H, _NET),
    "ftplib": (H, _NET),
    "smtplib": (H, _NET),
    "telnetlib": (H, _NET),
    "imaplib": (C, _NET + "; IMAP4_stream runs a command"),
    "poplib": (H, _NET),
    "nntplib": (H, _NET),
    "xmlrpc": (H, _NET),
    "xmlrpclib": (H, _NET),
    "paramiko": (C, "opens SSH connections and runs remote commands"),
    "fabric": (C, "runs remote commands"),
    # scanners: a pickle touching one is trying to blind it
    "trainguard": (C, "reaches the trainguard scanner itself (tampering with the check)"),
    "picklescan": (C, "reaches a pickle scanner (tampering with the check)"),
    "modelscan": (C, "reaches a model scanner (tampering with the check)"),
    "fickling": (C, "reaches a pickle scanner (tampering with the check)"),
    "modelaudit": (C, "reaches a model scanner (tampering with the check)"),
}

#: Exceptions inside dangerous modules: these names only carry data.
DANGEROUS_EXCEPTIONS: frozenset[str] = frozenset(
    {
        "types.SimpleNamespace",
        "types.MappingProxyType",
        "io.BytesIO",
        "_io.BytesIO",
        "io.StringIO",
        "_io.StringIO",
        "codecs.decode",
        "codecs.encode",
        "pathlib.PosixPath",
        "logging.Logger",
        "logging.LogRecord",
        "copy.copy",
        "operator.getitem",
        "operator.itemgetter",
        "_operator.itemgetter",
        "operator.add",
        "operator.mul",
        "operator.neg",
        "numpy.random.mtrand.RandomState",
        "torch.serialization._get_layout",
        "torch.serialization.StorageType",
        "torch.distributed.device_mesh.DeviceMesh",
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "joblib.numpy_pickle_compat.NDArrayWrapper",
        "joblib.numpy_pickle_compat.ZNDArrayWrapper",
    }
)

#: Module names that, reached by attribute traversal (``torch.serialization.os``),
#: give the pickle the same power as importing them directly.
DANGEROUS_MODULE_NAMES: frozenset[str] = frozenset(
    _w(
        "os posix nt subprocess sys builtins __builtins__ __builtin__ pty socket shutil "
        "importlib runpy ctypes pickle _pickle cPickle marshal code codeop pdb bdb timeit trace "
        "cProfile profile pip ensurepip venv multiprocessing pkgutil pydoc types webbrowser "
        "_posixsubprocess commands popen2 dill cloudpickle"
    )
)

#: Attribute names that reach globals, code or the class hierarchy.
DANGEROUS_DUNDERS: frozenset[str] = frozenset(
    _w(
        "__globals__ __builtins__ __dict__ __class__ __subclasses__ __code__ __reduce__ "
        "__reduce_ex__ __getattribute__ __import__ __loader__ __spec__ __self__ __func__ "
        "__closure__ __base__ __bases__ __mro__ __getattr__ __setattr__ __delattr__ "
        "__call__ __init__ __new__ __setstate__ __module__ __wrapped__ func_globals"
    )
)

#: Callable names that run commands or code wherever they are re-exported.
DANGEROUS_CALLABLE_NAMES: frozenset[str] = frozenset(
    _w(
        "system popen popen2 popen3 popen4 Popen spawnl spawnle spawnlp spawnlpe spawnv "
        "spawnve spawnvp spawnvpe execl execle execlp execlpe execv execve execvp execvpe "
        "getoutput getstatusoutput check_output check_call run_path run_module _run_code "
        "eval exec execfile __import__ import_module breakpoint set_trace runcode runsource "
        "runctx runcall startfile fork forkpty posix_spawn posix_spawnp kill killpg "
        "rmtree remove unlink removedirs putenv _get_command_stdout resolve_name locate "
        "pipepager tempfilepager loads load urlopen urlretrieve create_connection "
        "spawnv_passfds _run_pip execWrapper runstring"
    )
)
