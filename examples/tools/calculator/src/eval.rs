//! A small, total evaluator of arithmetic expressions: every input gives a value or an
//! [`EvalError`] naming what is wrong and where — never a panic, never unbounded
//! recursion (nesting is capped at [`MAX_DEPTH`]), never a non-finite result.
//!
//! ```text
//! expr  = term (("+" | "-") term)*
//! term  = unary (("*" | "/" | "%") unary)*
//! unary = ("-" | "+") unary | power
//! power = atom ("^" unary)?                 right-associative; -2^2 = -(2^2)
//! atom  = number | "(" expr ")" | name | name "(" expr ("," expr)* ")"
//! ```
//!
//! Numbers are decimal (`12`, `0.5`, `.5`, `1e-3`); names are the constants `pi` and
//! `e` and the functions listed in [`FUNCTIONS`].

use std::fmt;

/// Deepest nesting of parentheses, signs and powers.
pub const MAX_DEPTH: usize = 64;

/// The functions an expression may call, with their arity (`None`: one or more).
pub const FUNCTIONS: &[(&str, Option<usize>)] = &[
    ("abs", Some(1)),
    ("sqrt", Some(1)),
    ("exp", Some(1)),
    ("ln", Some(1)),
    ("log10", Some(1)),
    ("sin", Some(1)),
    ("cos", Some(1)),
    ("tan", Some(1)),
    ("floor", Some(1)),
    ("ceil", Some(1)),
    ("round", Some(1)),
    ("pow", Some(2)),
    ("min", None),
    ("max", None),
];

/// Why an expression has no value; `at` is the byte offset of the problem.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalError {
    pub message: String,
    pub at: usize,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at offset {})", self.message, self.at)
    }
}

/// The value of `expression`.
pub fn evaluate(expression: &str) -> Result<f64, EvalError> {
    let mut parser = Parser {
        src: expression.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let value = parser.expr()?;
    parser.skip_space();
    if parser.pos < parser.src.len() {
        return Err(parser.error(format!("unexpected `{}`", parser.peek_char())));
    }
    Ok(value)
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> EvalError {
        EvalError {
            message: message.into(),
            at: self.pos,
        }
    }

    fn skip_space(&mut self) {
        while self.pos < self.src.len() && self.src[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    /// The next non-space byte, if any.
    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.src.get(self.pos).copied()
    }

    /// The character at the cursor, for messages (the input may be any UTF-8).
    fn peek_char(&self) -> char {
        std::str::from_utf8(&self.src[self.pos..])
            .ok()
            .and_then(|s| s.chars().next())
            .unwrap_or('\u{FFFD}')
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Runs `f` one level deeper, refusing to go past [`MAX_DEPTH`].
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, EvalError>,
    ) -> Result<T, EvalError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }

    fn expr(&mut self) -> Result<f64, EvalError> {
        let mut value = self.term()?;
        loop {
            let at = self.pos;
            if self.eat(b'+') {
                value = finite(value + self.term()?, "sum", at)?;
            } else if self.eat(b'-') {
                value = finite(value - self.term()?, "difference", at)?;
            } else {
                return Ok(value);
            }
        }
    }

    fn term(&mut self) -> Result<f64, EvalError> {
        let mut value = self.unary()?;
        loop {
            self.skip_space();
            let at = self.pos;
            if self.eat(b'*') {
                value = finite(value * self.unary()?, "product", at)?;
            } else if self.eat(b'/') {
                let divisor = self.unary()?;
                if divisor == 0.0 {
                    return Err(EvalError {
                        message: "division by zero".into(),
                        at,
                    });
                }
                value = finite(value / divisor, "quotient", at)?;
            } else if self.eat(b'%') {
                let divisor = self.unary()?;
                if divisor == 0.0 {
                    return Err(EvalError {
                        message: "remainder of a division by zero".into(),
                        at,
                    });
                }
                value = finite(value % divisor, "remainder", at)?;
            } else {
                return Ok(value);
            }
        }
    }

    fn unary(&mut self) -> Result<f64, EvalError> {
        self.nested(|p| {
            if p.eat(b'-') {
                Ok(-p.unary()?)
            } else if p.eat(b'+') {
                p.unary()
            } else {
                p.power()
            }
        })
    }

    fn power(&mut self) -> Result<f64, EvalError> {
        let base = self.atom()?;
        self.skip_space();
        let at = self.pos;
        if self.eat(b'^') {
            let exponent = self.unary()?;
            return finite(base.powf(exponent), "power", at);
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<f64, EvalError> {
        match self.peek() {
            None => Err(self.error("the expression ends where a number was expected")),
            Some(b'(') => {
                self.pos += 1;
                let value = self.nested(Self::expr)?;
                if !self.eat(b')') {
                    return Err(self.error("expected `)`"));
                }
                Ok(value)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.name(),
            Some(_) => Err(self.error(format!("unexpected `{}`", self.peek_char()))),
        }
    }

    fn number(&mut self) -> Result<f64, EvalError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            while p.pos < p.src.len() && p.src[p.pos].is_ascii_digit() {
                p.pos += 1;
            }
        };
        digits(self);
        if self.src.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            digits(self);
        }
        if matches!(self.src.get(self.pos), Some(b'e' | b'E'))
            && matches!(self.src.get(self.pos + 1), Some(b'0'..=b'9' | b'+' | b'-'))
        {
            self.pos += 2;
            digits(self);
        }
        let text = std::str::from_utf8(&self.src[start..self.pos]).unwrap_or("");
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            Ok(_) => Err(EvalError {
                message: format!("`{text}` is too large"),
                at: start,
            }),
            Err(_) => Err(EvalError {
                message: format!("`{text}` is not a number"),
                at: start,
            }),
        }
    }

    fn name(&mut self) -> Result<f64, EvalError> {
        let start = self.pos;
        while self.pos < self.src.len()
            && (self.src[self.pos].is_ascii_alphanumeric() || self.src[self.pos] == b'_')
        {
            self.pos += 1;
        }
        let name = std::str::from_utf8(&self.src[start..self.pos]).unwrap_or("");
        if self.peek() != Some(b'(') {
            return match name {
                "pi" => Ok(std::f64::consts::PI),
                "e" => Ok(std::f64::consts::E),
                _ => Err(EvalError {
                    message: format!("unknown name `{name}` (constants: pi, e)"),
                    at: start,
                }),
            };
        }
        let Some(&(_, arity)) = FUNCTIONS.iter().find(|(f, _)| *f == name) else {
            return Err(EvalError {
                message: format!("unknown function `{name}`"),
                at: start,
            });
        };
        self.pos += 1;
        let args = self.nested(|p| {
            let mut args = vec![p.expr()?];
            while p.eat(b',') {
                args.push(p.expr()?);
            }
            Ok(args)
        })?;
        if !self.eat(b')') {
            return Err(self.error("expected `,` or `)`"));
        }
        if let Some(n) = arity
            && args.len() != n
        {
            return Err(EvalError {
                message: format!("`{name}` takes {n} argument(s), got {}", args.len()),
                at: start,
            });
        }
        let x = args[0];
        let value = match name {
            "abs" => x.abs(),
            "sqrt" => x.sqrt(),
            "exp" => x.exp(),
            "ln" => x.ln(),
            "log10" => x.log10(),
            "sin" => x.sin(),
            "cos" => x.cos(),
            "tan" => x.tan(),
            "floor" => x.floor(),
            "ceil" => x.ceil(),
            "round" => x.round(),
            "pow" => x.powf(args[1]),
            "min" => args.iter().copied().fold(f64::INFINITY, f64::min),
            _ => args.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        };
        finite(value, &format!("`{name}`"), start)
    }
}

/// `value`, or an error if it is infinite or not a number.
fn finite(value: f64, what: &str, at: usize) -> Result<f64, EvalError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(EvalError {
            message: format!("the {what} is not a finite number"),
            at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(expr: &str) -> f64 {
        evaluate(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    fn err(expr: &str) -> String {
        match evaluate(expr) {
            Ok(v) => panic!("{expr} gave {v}, expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn precedence_associativity_and_functions() {
        assert_eq!(ok("1 + 2 * 3"), 7.0);
        assert_eq!(ok("(1 + 2) * 3"), 9.0);
        assert_eq!(ok("10 - 4 - 3"), 3.0);
        assert_eq!(ok("2 ^ 3 ^ 2"), 512.0);
        assert_eq!(ok("-2 ^ 2"), -4.0);
        assert_eq!(ok("2 ^ -1"), 0.5);
        assert_eq!(ok("7 % 4"), 3.0);
        assert_eq!(ok(".5 + 2E1 + 25e-1"), 23.0);
        assert_eq!(ok("max(1, sqrt(16), min(9, 5))"), 5.0);
        assert_eq!(ok("round(2 * pi)"), 6.0);
        assert_eq!(ok("pow(2, 10)"), 1024.0);
    }

    #[test]
    fn bad_input_is_an_error_naming_the_place() {
        assert_eq!(
            err("1 +"),
            "the expression ends where a number was expected (at offset 3)"
        );
        assert_eq!(err("1 / (2 - 2)"), "division by zero (at offset 2)");
        assert_eq!(err("(1 + 2"), "expected `)` (at offset 6)");
        assert_eq!(err("2 $ 3"), "unexpected `$` (at offset 2)");
        assert_eq!(err("2 € 3"), "unexpected `€` (at offset 2)");
        assert!(err("foo(1)").starts_with("unknown function `foo`"));
        assert!(err("x + 1").starts_with("unknown name `x`"));
        assert!(err("sqrt(1, 2)").starts_with("`sqrt` takes 1 argument(s), got 2"));
        assert!(err("sqrt(-1)").starts_with("the `sqrt` is not a finite number"));
        assert!(err("10 ^ 400").starts_with("the power is not a finite number"));
        assert!(err("1e999").starts_with("`1e999` is too large"));
        assert!(err("").starts_with("the expression ends"));
        assert!(err("1 2").starts_with("unexpected `2`"));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(err(&deep).contains("nested more than 64 levels deep"));
        assert!(err(&"-".repeat(10_000)).contains("nested more than"));
        let fine = format!("{}1{}", "(".repeat(20), ")".repeat(20));
        assert_eq!(ok(&fine), 1.0);
    }
}
