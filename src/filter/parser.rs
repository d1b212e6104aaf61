//! Recursive-descent parser from tokens to [`Expr`], enforcing the documented limits.
//!
//! Grammar (AND binds tighter than OR; keywords are case-insensitive):
//!
//! ```text
//! expr       := and ( ("OR" | "||") and )*
//! and        := unary ( ("AND" | "&&") unary )*
//! unary      := ("NOT" | "!") unary | "(" expr ")" | comparison
//! comparison := operand op right
//! op         := "=" | "==" | "!=" | "<>" | ">" | ">=" | "<" | "<=" | "LIKE" | "NOT LIKE"
//!             | "IN" | "NOT IN"
//! right      := operand | list            (a list only after IN / NOT IN)
//! operand    := path | "@request.auth." path | string | number | true | false | null
//! list       := "(" value ( "," value )* ")"
//! ```
//!
//! Velo's bare-word rule: on the right of a comparison whose left side is a record field, a bare
//! word is a string (`status = active`); anywhere else a bare word is a record field
//! (`@request.auth.id = user`). Inside a list a bare word is always a string. It follows that
//! the parser never puts a record field on both sides of a comparison.
//!
//! Recursion happens only through parentheses and `NOT`, both counted against
//! [`MAX_DEPTH`](super::MAX_DEPTH), so no input can exhaust the stack.

use super::ast::{CompareOp, Expr, Literal, Operand};
use super::lexer::{Spanned, Token};
use super::{MAX_DEPTH, MAX_LIST_ITEMS, ParseError};

pub(super) struct Parser {
    tokens: Vec<Spanned>,
    at: usize,
    /// Column just past the last character, reported when the input ends too early.
    end_column: usize,
}

const END: &str = "the end of the expression";

impl Parser {
    pub(super) fn new(tokens: Vec<Spanned>, end_column: usize) -> Self {
        Self {
            tokens,
            at: 0,
            end_column,
        }
    }

    /// Parses the whole token stream as one expression.
    pub(super) fn parse(mut self) -> Result<Expr, ParseError> {
        let expr = self.disjunction(0)?;
        match self.peek() {
            None => Ok(expr),
            Some(token) => Err(self.error("`AND`, `OR` or the end of the expression", token)),
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|spanned| &spanned.token)
    }

    fn column(&self) -> usize {
        self.tokens
            .get(self.at)
            .map_or(self.end_column, |spanned| spanned.column)
    }

    fn error(&self, expected: impl Into<String>, found: &Token) -> ParseError {
        ParseError::new(self.column(), expected, found.describe())
    }

    fn error_here(&self, expected: impl Into<String>) -> ParseError {
        match self.peek() {
            Some(token) => self.error(expected, token),
            None => ParseError::new(self.end_column, expected, END),
        }
    }

    fn next(&mut self) -> Option<Token> {
        let token = self
            .tokens
            .get(self.at)
            .map(|spanned| spanned.token.clone());
        self.at += 1;
        token
    }

    fn eat(&mut self, wanted: &Token) -> bool {
        let found = self.peek() == Some(wanted);
        if found {
            self.at += 1;
        }
        found
    }

    fn disjunction(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut parts = vec![self.conjunction(depth)?];
        while self.eat(&Token::Or) {
            parts.push(self.conjunction(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn conjunction(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut parts = vec![self.unary(depth)?];
        while self.eat(&Token::And) {
            parts.push(self.unary(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn enter(&self, depth: usize) -> Result<usize, ParseError> {
        if depth >= MAX_DEPTH {
            return Err(
                self.error_here(format!("at most {MAX_DEPTH} levels of parentheses and NOT"))
            );
        }
        Ok(depth + 1)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        match self.peek() {
            Some(Token::Not) => {
                let depth = self.enter(depth)?;
                self.at += 1;
                Ok(Expr::Not(Box::new(self.unary(depth)?)))
            }
            Some(Token::LParen) => {
                let depth = self.enter(depth)?;
                self.at += 1;
                let inner = self.disjunction(depth)?;
                if !self.eat(&Token::RParen) {
                    return Err(self.error_here("`)`, `AND` or `OR`"));
                }
                Ok(inner)
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let left = match self.peek() {
            Some(Token::Word(path)) => Operand::Field(path.clone()),
            Some(Token::Auth(path)) => Operand::Auth(path.clone()),
            Some(token) => match literal(token) {
                Some(literal) => Operand::Value(literal),
                None => {
                    return Err(
                        self.error_here("a field, `@request.auth.<field>`, a value, `(` or `NOT`")
                    );
                }
            },
            None => return Err(self.error_here("a comparison such as `status = 'active'`")),
        };
        self.at += 1;
        let op = self.operator(&left)?;
        let right = if op.takes_list() {
            self.list_side(&left)?
        } else {
            self.value_side(&left)?
        };
        Ok(Expr::Compare { op, left, right })
    }

    fn operator(&mut self, left: &Operand) -> Result<CompareOp, ParseError> {
        let expected = || {
            format!(
                "a comparison operator (=, !=, >, >=, <, <=, LIKE, NOT LIKE, IN, NOT IN) after `{left}`"
            )
        };
        let op = match self.peek() {
            Some(Token::Symbol(symbol)) => match *symbol {
                "=" => CompareOp::Eq,
                "!=" => CompareOp::Ne,
                ">" => CompareOp::Gt,
                ">=" => CompareOp::Ge,
                "<" => CompareOp::Lt,
                "<=" => CompareOp::Le,
                _ => return Err(self.error_here(expected())),
            },
            Some(Token::Like) => CompareOp::Like,
            Some(Token::In) => CompareOp::In,
            Some(Token::Not) => {
                let op = match self.tokens.get(self.at + 1).map(|s| &s.token) {
                    Some(Token::Like) => CompareOp::NotLike,
                    Some(Token::In) => CompareOp::NotIn,
                    _ => {
                        self.at += 1;
                        return Err(self.error_here("`LIKE` or `IN` after `NOT`"));
                    }
                };
                self.at += 1;
                op
            }
            _ => return Err(self.error_here(expected())),
        };
        self.at += 1;
        Ok(op)
    }

    /// The right side of `=`, `!=`, `<`, `LIKE`...: a single operand.
    fn value_side(&mut self, left: &Operand) -> Result<Operand, ParseError> {
        let operand = match self.peek() {
            Some(Token::Word(path)) if matches!(left, Operand::Field(_)) => {
                Operand::Value(Literal::String(path.as_str().to_owned()))
            }
            Some(Token::Word(path)) => Operand::Field(path.clone()),
            Some(Token::Auth(path)) => Operand::Auth(path.clone()),
            Some(Token::LParen) => {
                return Err(self.error_here("a single value (a list is only allowed after IN)"));
            }
            Some(token) => match literal(token) {
                Some(literal) => Operand::Value(literal),
                None => return Err(self.error_here("a value, a field or `@request.auth.<field>`")),
            },
            None => return Err(self.error_here("a value, a field or `@request.auth.<field>`")),
        };
        self.at += 1;
        Ok(operand)
    }

    /// The right side of `IN` / `NOT IN`: a list, an auth claim, or (when the left side is not
    /// a record field) a record field, holding an array.
    fn list_side(&mut self, left: &Operand) -> Result<Operand, ParseError> {
        let expected = "a list such as ('a', 'b')";
        match self.peek() {
            Some(Token::LParen) => {
                self.at += 1;
                self.list_items().map(Operand::List)
            }
            Some(Token::Auth(path)) => {
                let path = path.clone();
                self.at += 1;
                Ok(Operand::Auth(path))
            }
            Some(Token::Word(path)) if !matches!(left, Operand::Field(_)) => {
                let path = path.clone();
                self.at += 1;
                Ok(Operand::Field(path))
            }
            _ => Err(self.error_here(expected)),
        }
    }

    fn list_items(&mut self) -> Result<Vec<Literal>, ParseError> {
        let mut items = Vec::new();
        loop {
            if items.len() == MAX_LIST_ITEMS {
                return Err(
                    self.error_here(format!("`)`: a list holds at most {MAX_LIST_ITEMS} values"))
                );
            }
            let item = match self.peek() {
                Some(Token::Word(path)) => Literal::String(path.as_str().to_owned()),
                Some(token) => match literal(token) {
                    Some(literal) => literal,
                    None => return Err(self.error_here("a value in the list")),
                },
                None => return Err(self.error_here("a value in the list")),
            };
            self.at += 1;
            items.push(item);
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::RParen) => return Ok(items),
                _ => {
                    self.at -= 1;
                    return Err(self.error_here("`,` or `)` in the list"));
                }
            }
        }
    }
}

fn literal(token: &Token) -> Option<Literal> {
    Some(match token {
        Token::Str(text) => Literal::String(text.clone()),
        Token::Number(value) => Literal::Number(*value),
        Token::True => Literal::Bool(true),
        Token::False => Literal::Bool(false),
        Token::Null => Literal::Null,
        _ => return None,
    })
}
