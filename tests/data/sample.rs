//! A tiny arithmetic expression evaluator: real Rust for the code splitter test.

use std::collections::HashMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Number(f64),
    Ident(String),
    Op(char),
    LParen,
    RParen,
}

#[derive(Debug, PartialEq)]
pub enum EvalError {
    UnexpectedChar(char),
    UnknownVariable(String),
    UnbalancedParens,
    DivisionByZero,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::UnexpectedChar(c) => write!(f, "unexpected character {c:?}"),
            EvalError::UnknownVariable(name) => write!(f, "unknown variable {name}"),
            EvalError::UnbalancedParens => write!(f, "unbalanced parentheses"),
            EvalError::DivisionByZero => write!(f, "division by zero"),
        }
    }
}

pub fn tokenize(input: &str) -> Result<Vec<Token>, EvalError> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            tokens.push(Token::Number(text.parse().map_err(|_| EvalError::UnexpectedChar(c))?));
        } else if c.is_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_alphanumeric() {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            tokens.push(match c {
                '+' | '-' | '*' | '/' => Token::Op(c),
                '(' => Token::LParen,
                ')' => Token::RParen,
                other => return Err(EvalError::UnexpectedChar(other)),
            });
            i += 1;
        }
    }
    Ok(tokens)
}

pub struct Evaluator<'a> {
    tokens: Vec<Token>,
    pos: usize,
    vars: &'a HashMap<String, f64>,
}

impl<'a> Evaluator<'a> {
    pub fn new(tokens: Vec<Token>, vars: &'a HashMap<String, f64>) -> Self {
        Evaluator { tokens, pos: 0, vars }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn expr(&mut self) -> Result<f64, EvalError> {
        let mut value = self.term()?;
        while let Some(Token::Op(op @ ('+' | '-'))) = self.peek().cloned() {
            self.pos += 1;
            let rhs = self.term()?;
            value = if op == '+' { value + rhs } else { value - rhs };
        }
        Ok(value)
    }

    fn term(&mut self) -> Result<f64, EvalError> {
        let mut value = self.atom()?;
        while let Some(Token::Op(op @ ('*' | '/'))) = self.peek().cloned() {
            self.pos += 1;
            let rhs = self.atom()?;
            if op == '/' && rhs == 0.0 {
                return Err(EvalError::DivisionByZero);
            }
            value = if op == '*' { value * rhs } else { value / rhs };
        }
        Ok(value)
    }

    fn atom(&mut self) -> Result<f64, EvalError> {
        let token = self.peek().cloned().ok_or(EvalError::UnbalancedParens)?;
        self.pos += 1;
        match token {
            Token::Number(n) => Ok(n),
            Token::Ident(name) => self.vars.get(&name).copied().ok_or(EvalError::UnknownVariable(name)),
            Token::Op('-') => Ok(-self.atom()?),
            Token::LParen => {
                let value = self.expr()?;
                match self.peek() {
                    Some(Token::RParen) => {
                        self.pos += 1;
                        Ok(value)
                    }
                    _ => Err(EvalError::UnbalancedParens),
                }
            }
            Token::Op(c) => Err(EvalError::UnexpectedChar(c)),
            Token::RParen => Err(EvalError::UnbalancedParens),
        }
    }
}

pub fn evaluate(input: &str, vars: &HashMap<String, f64>) -> Result<f64, EvalError> {
    let mut evaluator = Evaluator::new(tokenize(input)?, vars);
    let value = evaluator.expr()?;
    if evaluator.pos != evaluator.tokens.len() {
        return Err(EvalError::UnbalancedParens);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_variables() {
        let vars = HashMap::from([("x".to_string(), 4.0)]);
        assert_eq!(evaluate("2 + 3 * x", &vars), Ok(14.0));
        assert_eq!(evaluate("(1 + 1) / 0", &vars), Err(EvalError::DivisionByZero));
    }
}
