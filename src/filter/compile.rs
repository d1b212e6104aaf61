//! Compiles expressions to rhai and evaluates them in a sandbox.
//!
//! The generated script is only glue: `&&`, `||`, `!` and calls to the comparison functions of
//! [`value::script`](super::value). User text never becomes script source: every literal and
//! field path is a named constant that the rhai optimiser inlines into the compiled AST, so the
//! source holds nothing but generated names. `status = 'active' AND NOT age < 18` becomes
//!
//! ```text
//! (eq(field(record, c0), c1) && !(lt(field(record, c2), c3)))
//! ```
//!
//! The engine is raw (no packages, no I/O, no `eval`) with limits on operations, call depth,
//! expression depth, and string, array and map sizes. A failed evaluation is "no match" and is
//! counted in [`FilterEngine::eval_errors`].

use std::sync::atomic::{AtomicU64, Ordering};

use rhai::{AST, Array, Dynamic, Engine, ImmutableString, Map, OptimizationLevel, Scope};

use super::ast::{CompareOp, Expr, FieldPath, Operand};
use super::context::{Auth, Record};
use super::value::{self, script};

/// Scope variable holding the event's record.
const RECORD: &str = "record";
/// Scope variable holding the subscriber's claims (`@request.auth`).
const AUTH: &str = "auth";

/// Rhai's own nesting limit for the generated script. Parser limits keep real scripts far below
/// it: each level of parentheses or NOT adds at most a few rhai levels, and long AND/OR chains
/// are emitted as balanced trees (depth log2 of their length).
const MAX_SCRIPT_DEPTH: usize = 256;
/// Operations one evaluation may take; a 4 KiB expression needs a few thousand.
const MAX_OPERATIONS: u64 = 200_000;
/// Strings, arrays and maps a script may hold: generous enough for any record the API accepts.
const MAX_STRING_SIZE: usize = 1 << 20;
const MAX_COLLECTION_SIZE: usize = 100_000;

/// The sandboxed rhai engine every filter is compiled and run with. Shared by all collections.
pub struct FilterEngine {
    engine: Engine,
    eval_errors: AtomicU64,
}

impl Default for FilterEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl FilterEngine {
    pub fn new() -> Self {
        let mut engine = Engine::new_raw();
        engine
            .set_optimization_level(OptimizationLevel::Simple)
            .set_strict_variables(true)
            .set_max_operations(MAX_OPERATIONS)
            .set_max_call_levels(8)
            .set_max_expr_depths(MAX_SCRIPT_DEPTH, MAX_SCRIPT_DEPTH)
            .set_max_string_size(MAX_STRING_SIZE)
            .set_max_array_size(MAX_COLLECTION_SIZE)
            .set_max_map_size(MAX_COLLECTION_SIZE)
            .disable_symbol("eval")
            .on_print(|_| {})
            .on_debug(|_, _, _| {});
        engine
            .register_fn("field", script::field)
            .register_fn("claim", script::claim)
            .register_fn("eq", script::eq)
            .register_fn("gt", script::gt)
            .register_fn("ge", script::ge)
            .register_fn("lt", script::lt)
            .register_fn("le", script::le)
            .register_fn("like", script::like)
            .register_fn("member", script::member);
        Self {
            engine,
            eval_errors: AtomicU64::new(0),
        }
    }

    /// Compiles a condition; `None` is the condition that matches every record.
    pub fn compile(&self, condition: Option<Expr>) -> Result<CompiledFilter, CompileError> {
        let Some(expr) = condition else {
            return Ok(CompiledFilter {
                expr: None,
                ast: None,
                fields: Vec::new(),
            });
        };
        let mut codegen = Codegen::default();
        codegen.expr(&expr);
        let ast = self
            .engine
            .compile_with_scope(&codegen.constants, &codegen.source)
            .map_err(|error| CompileError(error.to_string()))?;
        let fields = expr.record_fields().into_iter().map(Into::into).collect();
        Ok(CompiledFilter {
            expr: Some(expr),
            ast: Some(ast),
            fields,
        })
    }

    /// Starts matching one record against any number of compiled filters.
    pub fn evaluation(&self, record: Record) -> Evaluation<'_> {
        let mut scope = Scope::with_capacity(2);
        scope.push(RECORD, record.0);
        scope.push(AUTH, Dynamic::UNIT);
        Evaluation {
            engine: self,
            scope,
        }
    }

    /// How many evaluations failed (and so did not match) since start-up.
    pub fn eval_errors(&self) -> u64 {
        self.eval_errors.load(Ordering::Relaxed)
    }
}

/// The expression could not be compiled (it parsed, but is beyond the sandbox's limits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the expression is too complex to compile: {0}")]
pub struct CompileError(String);

/// An expression compiled once and evaluated for many records and subscribers.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    /// The tree it came from: the index plans from it.
    expr: Option<Expr>,
    /// `None` matches everything without running a script.
    ast: Option<AST>,
    /// The record's top-level fields it reads.
    fields: Vec<ImmutableString>,
}

impl CompiledFilter {
    pub fn expr(&self) -> Option<&Expr> {
        self.expr.as_ref()
    }

    /// The record as this filter reads it: only the fields it names, converted (its script
    /// reads nothing else). For scans of many records, where converting every field would
    /// cost most of the time.
    pub fn record(&self, object: &serde_json::Map<String, serde_json::Value>) -> Record {
        Record::from_fields(object, &self.fields)
    }
}

/// One record being matched: a rhai scope that owns the record, with the subscriber's claims
/// swapped in for each evaluation.
pub struct Evaluation<'e> {
    engine: &'e FilterEngine,
    scope: Scope<'static>,
}

impl Evaluation<'_> {
    /// Runs `f` on the record's value at `path` (`None` when missing).
    pub fn with_field<R>(&self, path: &FieldPath, f: impl FnOnce(Option<&Dynamic>) -> R) -> R {
        match self.scope.get(RECORD).map(Dynamic::as_map_ref) {
            Some(Ok(record)) => value::with_path(&record, path.as_str(), f),
            _ => f(None),
        }
    }

    /// Whether the record satisfies `filter` for the subscriber `auth`. Errors are "no match".
    pub fn matches(&mut self, filter: &CompiledFilter, auth: &Auth) -> bool {
        let Some(ast) = &filter.ast else {
            return true;
        };
        if let Some(slot) = self.scope.get_mut(AUTH) {
            *slot = auth.as_dynamic().clone();
        }
        match self
            .engine
            .engine
            .eval_ast_with_scope::<bool>(&mut self.scope, ast)
        {
            Ok(matched) => matched,
            Err(_) => {
                self.engine.eval_errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Writes the script for an expression, collecting its constants.
struct Codegen {
    source: String,
    constants: Scope<'static>,
}

impl Default for Codegen {
    fn default() -> Self {
        let mut constants = Scope::new();
        // Declared so that strict-variables compilation accepts them; set per evaluation.
        constants.push(RECORD, Map::new());
        constants.push(AUTH, Map::new());
        Self {
            source: String::new(),
            constants,
        }
    }
}

impl Codegen {
    fn expr(&mut self, expr: &Expr) {
        match expr {
            Expr::And(parts) => self.balanced(parts, " && "),
            Expr::Or(parts) => self.balanced(parts, " || "),
            Expr::Not(inner) => {
                self.source.push_str("!(");
                self.expr(inner);
                self.source.push(')');
            }
            Expr::Compare { op, left, right } => {
                let function = match op {
                    CompareOp::Eq => "eq(",
                    CompareOp::Ne => "!eq(",
                    CompareOp::Gt => "gt(",
                    CompareOp::Ge => "ge(",
                    CompareOp::Lt => "lt(",
                    CompareOp::Le => "le(",
                    CompareOp::Like => "like(",
                    CompareOp::NotLike => "!like(",
                    CompareOp::In => "member(",
                    CompareOp::NotIn => "!member(",
                };
                self.source.push_str(function);
                self.operand(left);
                self.source.push_str(", ");
                self.operand(right);
                self.source.push(')');
            }
        }
    }

    /// `a && b && c && d` as `((a && b) && (c && d))`: depth grows with the log of the length.
    fn balanced(&mut self, parts: &[Expr], op: &str) {
        if let [single] = parts {
            return self.expr(single);
        }
        let (left, right) = parts.split_at(parts.len() / 2);
        self.source.push('(');
        self.balanced(left, op);
        self.source.push_str(op);
        self.balanced(right, op);
        self.source.push(')');
    }

    fn operand(&mut self, operand: &Operand) {
        match operand {
            Operand::Field(path) => {
                self.source.push_str("field(record, ");
                self.constant(path.as_immutable().clone().into());
                self.source.push(')');
            }
            Operand::Auth(path) => {
                self.source.push_str("claim(auth, ");
                self.constant(path.as_immutable().clone().into());
                self.source.push(')');
            }
            Operand::Value(literal) => self.constant(value::from_literal(literal)),
            Operand::List(items) => {
                let array: Array = items.iter().map(value::from_literal).collect();
                self.constant(Dynamic::from_array(array));
            }
        }
    }

    /// Emits a reference to a new constant holding `value`.
    fn constant(&mut self, value: Dynamic) {
        let name = format!("c{}", self.constants.len());
        self.source.push_str(&name);
        self.constants
            .push_constant_dynamic(ImmutableString::from(name), value);
    }
}
