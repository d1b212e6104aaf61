//! Splits expression text into tokens, each with its 1-based character column.
//!
//! The lexer never recurses and reads each character once; it knows nothing of precedence or of
//! the bare-word rule (that is the parser's).

use super::ParseError;
use super::ast::FieldPath;
use super::number::Number;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Token {
    LParen,
    RParen,
    Comma,
    /// `=`, `==`, `!=`, `<>`, `>`, `>=`, `<`, `<=`
    Symbol(&'static str),
    /// `&&` or the keyword `AND`
    And,
    /// `||` or the keyword `OR`
    Or,
    /// `!` or the keyword `NOT`
    Not,
    Like,
    In,
    True,
    False,
    Null,
    SuperuserOnly,
    /// A bare word or dotted path: `status`, `author.name`, `active`.
    Word(FieldPath),
    /// `@request.auth.<path>`
    Auth(FieldPath),
    Str(String),
    Number(Number),
}

impl Token {
    /// How the token is named in "expected ..., found ..." messages.
    pub(super) fn describe(&self) -> String {
        match self {
            Token::LParen => "`(`".into(),
            Token::RParen => "`)`".into(),
            Token::Comma => "`,`".into(),
            Token::Symbol(symbol) => format!("`{symbol}`"),
            Token::And => "`AND`".into(),
            Token::Or => "`OR`".into(),
            Token::Not => "`NOT`".into(),
            Token::Like => "`LIKE`".into(),
            Token::In => "`IN`".into(),
            Token::True => "`true`".into(),
            Token::False => "`false`".into(),
            Token::Null => "`null`".into(),
            Token::SuperuserOnly => "`SUPERUSER_ONLY`".into(),
            Token::Word(path) => format!("`{path}`"),
            Token::Auth(path) => format!("`@request.auth.{path}`"),
            Token::Str(_) => "a string".into(),
            Token::Number(_) => "a number".into(),
        }
    }
}

/// A token and the 1-based character column where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Spanned {
    pub token: Token,
    pub column: usize,
}

pub(super) fn tokenize(text: &str) -> Result<Vec<Spanned>, ParseError> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        at: 0,
    };
    let mut tokens = Vec::new();
    while let Some(spanned) = lexer.next_token()? {
        tokens.push(spanned);
    }
    Ok(tokens)
}

struct Lexer {
    chars: Vec<char>,
    /// Index of the next character; its column is `at + 1`.
    at: usize,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn peek_second(&self) -> Option<char> {
        self.chars.get(self.at + 1).copied()
    }

    fn next_token(&mut self) -> Result<Option<Spanned>, ParseError> {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
        let Some(c) = self.peek() else {
            return Ok(None);
        };
        let column = self.at + 1;
        let two = |second: char| self.peek_second() == Some(second);
        let (token, width) = match c {
            '(' => (Token::LParen, 1),
            ')' => (Token::RParen, 1),
            ',' => (Token::Comma, 1),
            '=' if two('=') => (Token::Symbol("="), 2),
            '=' => (Token::Symbol("="), 1),
            '!' if two('=') => (Token::Symbol("!="), 2),
            '!' => (Token::Not, 1),
            '<' if two('>') => (Token::Symbol("!="), 2),
            '<' if two('=') => (Token::Symbol("<="), 2),
            '<' => (Token::Symbol("<"), 1),
            '>' if two('=') => (Token::Symbol(">="), 2),
            '>' => (Token::Symbol(">"), 1),
            '&' if two('&') => (Token::And, 2),
            '|' if two('|') => (Token::Or, 2),
            '\'' | '"' => return self.string(c, column).map(Some),
            '@' => return self.auth(column).map(Some),
            '-' if self.peek_second().is_some_and(|d| d.is_ascii_digit()) => {
                return self.number(column).map(Some);
            }
            c if c.is_ascii_digit() => return self.number(column).map(Some),
            c if c.is_ascii_alphabetic() || c == '_' => return self.word(column).map(Some),
            other => {
                return Err(ParseError::new(
                    column,
                    "an operand, an operator or a parenthesis",
                    format!("`{other}`"),
                ));
            }
        };
        self.at += width;
        Ok(Some(Spanned { token, column }))
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let start = self.at;
        while self.peek().is_some_and(&keep) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    /// A dotted path: identifier segments joined by `.`.
    fn path(&mut self, column: usize) -> Result<FieldPath, ParseError> {
        let text = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        FieldPath::new(&text).ok_or_else(|| {
            ParseError::new(
                column,
                "a field path such as `author.name` (letters, digits and `_`, joined by `.`)",
                format!("`{text}`"),
            )
        })
    }

    fn word(&mut self, column: usize) -> Result<Spanned, ParseError> {
        let path = self.path(column)?;
        let token = match path.as_str().to_ascii_uppercase().as_str() {
            "AND" => Token::And,
            "OR" => Token::Or,
            "NOT" => Token::Not,
            "LIKE" => Token::Like,
            "IN" => Token::In,
            "TRUE" => Token::True,
            "FALSE" => Token::False,
            "NULL" => Token::Null,
            "SUPERUSER_ONLY" => Token::SuperuserOnly,
            _ => Token::Word(path),
        };
        Ok(Spanned { token, column })
    }

    fn auth(&mut self, column: usize) -> Result<Spanned, ParseError> {
        const PREFIX: &str = "@request.auth.";
        self.at += 1;
        let name: String = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        let written = format!("@{name}");
        let Some(path) = written.strip_prefix(PREFIX) else {
            return Err(ParseError::new(
                column,
                "`@request.auth.<field>` (the only variable)",
                format!("`{written}`"),
            ));
        };
        let path = FieldPath::new(path).ok_or_else(|| {
            ParseError::new(
                column + PREFIX.len(),
                "a field path after `@request.auth.`",
                format!("`{path}`"),
            )
        })?;
        Ok(Spanned {
            token: Token::Auth(path),
            column,
        })
    }

    fn string(&mut self, quote: char, column: usize) -> Result<Spanned, ParseError> {
        self.at += 1;
        let mut text = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(ParseError::new(
                    column,
                    format!("a closing `{quote}` for the string that starts here"),
                    "the end of the expression",
                ));
            };
            self.at += 1;
            match c {
                c if c == quote => break,
                '\\' => {
                    let escape_column = self.at;
                    let escaped = match self.peek() {
                        Some(c @ ('\\' | '\'' | '"')) => c,
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        other => {
                            return Err(ParseError::new(
                                escape_column,
                                "an escape: `\\\\`, `\\'`, `\\\"`, `\\n`, `\\r` or `\\t`",
                                other.map_or("the end of the expression".into(), |c| {
                                    format!("`\\{c}`")
                                }),
                            ));
                        }
                    };
                    self.at += 1;
                    text.push(escaped);
                }
                c => text.push(c),
            }
        }
        Ok(Spanned {
            token: Token::Str(text),
            column,
        })
    }

    /// `-`? digits (`.` digits)? ([eE] [+-]? digits)?
    fn number(&mut self, column: usize) -> Result<Spanned, ParseError> {
        let start = self.at;
        if self.peek() == Some('-') {
            self.at += 1;
        }
        self.take_while(|c| c.is_ascii_digit());
        if self.peek() == Some('.') {
            self.at += 1;
            if self.take_while(|c| c.is_ascii_digit()).is_empty() {
                return Err(self.bad_number(start, column, "digits after the decimal point"));
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.at += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.at += 1;
            }
            if self.take_while(|c| c.is_ascii_digit()).is_empty() {
                return Err(self.bad_number(start, column, "digits in the exponent"));
            }
        }
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        {
            return Err(self.bad_number(start, column, "a space or an operator after a number"));
        }
        let text: String = self.chars[start..self.at].iter().collect();
        // Digits alone are an integer, kept exact; a fraction or an exponent makes a float.
        let (number, expected) = if text.contains(['.', 'e', 'E']) {
            let float = text.parse().ok().and_then(Number::from_f64);
            (float, "a number within the range of a 64-bit float")
        } else {
            (
                Number::parse_integer(&text),
                "an integer within 64 bits (-9223372036854775808 to 18446744073709551615); \
                 write a fraction or an exponent for a float",
            )
        };
        match number {
            Some(value) => Ok(Spanned {
                token: Token::Number(value),
                column,
            }),
            None => Err(ParseError::new(column, expected, format!("`{text}`"))),
        }
    }

    fn bad_number(&mut self, start: usize, column: usize, expected: &str) -> ParseError {
        let found = self
            .peek()
            .map_or("the end of the expression".to_string(), |c| {
                format!("`{c}`")
            });
        let written: String = self.chars[start..self.at].iter().collect();
        ParseError::new(column, format!("{expected} in `{written}`"), found)
    }
}
