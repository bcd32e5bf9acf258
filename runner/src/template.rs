//! Chat templates: a tenant's Jinja program (tokenizer_config.json `chat_template`), run on
//! every chat request. In this process a render is bounded in instructions (minijinja's fuel)
//! and in output, but not in the memory its intermediate values take (`s ~ s` ten times in a
//! row is a thousand times `s`, in ten instructions) nor in the time one instruction takes
//! (a filter over a 100 MB string). So the runner renders in a child process of its own
//! executable (`modelgate render-template`) that limits its own address space and CPU time
//! and is killed at a deadline: a template that runs away ends its own render, nothing else.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The hidden command of the `modelgate` binary that renders one template.
pub const SANDBOX_COMMAND: &str = "render-template";
/// Instructions one render may run (a real template takes a few hundred per message).
pub const FUEL: u64 = 1_000_000;
/// Address space of the render process (a real render takes a few MB).
const SANDBOX_MEMORY: u64 = 1 << 30;
/// CPU time of the render process, and its wall-clock deadline.
const SANDBOX_CPU_SECS: u64 = 2;
const SANDBOX_DEADLINE: Duration = Duration::from_secs(3);

/// One render: the template, what it is given, and the most bytes it may write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Render {
    pub template: String,
    /// `(role, content)` pairs.
    pub messages: Vec<(String, String)>,
    pub bos_token: String,
    pub eos_token: String,
    pub max_bytes: usize,
}

/// Where chat templates are rendered.
#[derive(Debug, Clone, Default)]
pub enum Renderer {
    /// In this process: fuel and an output cap only (tests of the families, tools).
    #[default]
    InProcess,
    /// In a child process of this executable, limited in memory and time.
    Sandbox(PathBuf),
}

impl Renderer {
    /// Renders, or says why the template could not be rendered (the tenant's to fix).
    pub fn render(&self, render: &Render) -> Result<String, String> {
        match self {
            Renderer::InProcess => render_here(render),
            Renderer::Sandbox(exe) => render_in_child(exe, render),
        }
    }
}

/// Renders in this process, bounded in instructions and output.
pub fn render_here(r: &Render) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_fuel(Some(FUEL));
    env.add_function("raise_exception", |message: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
    });
    let messages: Vec<_> =
        r.messages.iter().map(|(role, content)| minijinja::context! { role => role, content => content }).collect();
    let template = env.template_from_str(&r.template).map_err(|e| format!("the chat template does not parse: {e}"))?;
    let mut out = Capped { bytes: Vec::new(), max: r.max_bytes };
    let context = minijinja::context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => r.bos_token,
        eos_token => r.eos_token,
    };
    match template.render_captured_to(context, &mut out) {
        Ok(_) => String::from_utf8(out.bytes).map_err(|_| "the chat template wrote invalid UTF-8".to_owned()),
        Err(_) if out.bytes.len() > r.max_bytes => {
            Err(format!("the chat template's output exceeds the {} bytes this model reads", r.max_bytes))
        }
        Err(e) => Err(format!("the chat template failed on these messages: {e}")),
    }
}

/// An output that refuses to grow past `max` bytes.
struct Capped {
    bytes: Vec<u8>,
    max: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.max {
            self.bytes.resize(self.max + 1, 0);
            return Err(std::io::Error::other("output cap"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn render_in_child(exe: &std::path::Path, render: &Render) -> Result<String, String> {
    let request = serde_json::to_vec(render).map_err(|e| format!("encoding the render: {e}"))?;
    let failed = |e: std::io::Error| {
        tracing::error!(error = %e, "the template sandbox could not run");
        "the chat template could not be rendered (the runner's sandbox failed)".to_owned()
    };
    // At a lower CPU priority (`nice -n 10`, where the system has it: a tenth of a normal
    // thread's share under contention): a render that computes for its whole CPU allowance
    // yields to the requests the runner serves meanwhile, and a real one (milliseconds) still
    // finishes promptly on a busy runner.
    let spawn = |program: &std::ffi::OsStr, args: &[&std::ffi::OsStr]| {
        Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()
    };
    let (exe, command) = (exe.as_os_str(), std::ffi::OsStr::new(SANDBOX_COMMAND));
    let mut child = match spawn("nice".as_ref(), &["-n".as_ref(), "10".as_ref(), exe, command]) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => spawn(exe, &[command]),
        spawned => spawned,
    }
    .map_err(failed)?;
    let mut stdin = child.stdin.take().expect("stdin is piped; this is a bug");
    let mut stdout = child.stdout.take().expect("stdout is piped; this is a bug");
    // Pipes are read and written on threads of their own, so a child that stops reading or
    // writes more than a pipe holds cannot stall the deadline below.
    let writer = std::thread::spawn(move || stdin.write_all(&request));
    let reader = std::thread::spawn(move || {
        let mut answer = Vec::new();
        stdout.read_to_end(&mut answer).map(|_| answer)
    });
    let deadline = Instant::now() + SANDBOX_DEADLINE;
    let status = loop {
        match child.try_wait().map_err(failed)? {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let _ = writer.join();
    let answer = reader.join().ok().and_then(Result::ok).unwrap_or_default();
    match status {
        Some(status) if status.success() => serde_json::from_slice::<Result<String, String>>(&answer)
            .map_err(|_| "the chat template's sandbox answered nonsense".to_owned())?,
        Some(_) => Err(format!(
            "the chat template ran out of memory or time (at most {} MiB and {SANDBOX_CPU_SECS} s of CPU)",
            SANDBOX_MEMORY >> 20
        )),
        None => Err(format!("the chat template did not finish within {} s", SANDBOX_DEADLINE.as_secs())),
    }
}

/// The sandbox's side: limits this process, reads one [`Render`] as JSON from standard input,
/// writes the result as JSON to standard output. Runs before any runtime or thread starts.
pub fn serve_sandbox() -> std::io::Result<()> {
    rlimit::setrlimit(rlimit::Resource::AS, SANDBOX_MEMORY, SANDBOX_MEMORY)?;
    rlimit::setrlimit(rlimit::Resource::CPU, SANDBOX_CPU_SECS, SANDBOX_CPU_SECS)?;
    rlimit::setrlimit(rlimit::Resource::CORE, 0, 0)?;
    let mut request = Vec::new();
    std::io::stdin().take(256 * 1024 * 1024).read_to_end(&mut request)?;
    let answer = match serde_json::from_slice::<Render>(&request) {
        Ok(render) => render_here(&render),
        Err(e) => Err(format!("a render request that does not parse: {e}")),
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &answer)?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str) -> Render {
        Render {
            template: template.into(),
            messages: vec![("user".into(), "hi".into())],
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            max_bytes: 1000,
        }
    }

    #[test]
    fn a_real_template_renders() {
        let r = render("{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:");
        assert_eq!(render_here(&r), Ok("<s>user: hi\nassistant:".to_owned()));
    }

    #[test]
    fn output_past_the_cap_is_refused() {
        let r = render("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}");
        assert!(render_here(&r).is_err_and(|e| e.contains("exceeds the 1000 bytes")), "{:?}", render_here(&r));
    }

    #[test]
    fn endless_loops_run_out_of_fuel() {
        let r = render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
        let started = Instant::now();
        assert!(render_here(&r).is_err());
        assert!(started.elapsed() < Duration::from_secs(10), "fuel ends it");
    }
}
