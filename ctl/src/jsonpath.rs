//! kubectl's JSONPath template language for `-o jsonpath=…`.
//!
//! A port of `k8s.io/client-go/util/jsonpath` with kubectl's default
//! `--allow-missing-template-keys=true`: text outside braces is printed as is,
//! each `{…}` action prints its results separated by spaces (strings raw, maps
//! and lists as compact JSON), `{range …}…{end}` repeats its body for every
//! result, and fields that do not exist print nothing.
//!
//! Supported inside actions: `$` and `@` (the current object), `.field` (with
//! `\.` escaping a dot), `.*`, `..field` (recursive descent), `[n]`, `[-n]`,
//! `[start:end:step]`, `[*]`, `[a,b]` (union), `['key']`, `[?(@.a=="x")]` and
//! `[?(@.a)]` filters with `==`, `!=`, `<`, `>`, `<=`, `>=`, quoted text with Go
//! escapes (`{"\n"}`), numbers, `true` and `false`.

use std::fmt;

use serde_json::Value;

/// What went wrong parsing a template or evaluating it against an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The template is not valid JSONPath.
    Parse {
        /// The template as given, so the message can quote it.
        template: String,
        /// What is wrong with it, in client-go's words.
        message: String,
    },
    /// The template does not apply to the object (an index out of bounds,
    /// values of different types compared).
    Execute {
        /// The template as given, so the message can quote it.
        template: String,
        /// What failed, in client-go's words.
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse { template, message } => {
                write!(f, "error parsing jsonpath {template}, {message}")
            }
            Self::Execute { template, message } => {
                write!(f, "error executing jsonpath {template:?}: {message}")
            }
        }
    }
}

impl std::error::Error for Error {}

/// A parsed JSONPath template, ready to render any number of objects.
#[derive(Debug, Clone)]
pub struct Template {
    /// The template as given, quoted by errors.
    source: String,
    /// What the template prints, in order.
    segments: Vec<Segment>,
}

impl Template {
    /// Parses `template` (`{range .items[*]}{.metadata.name}{"\n"}{end}`).
    pub fn parse(template: &str) -> Result<Self, Error> {
        let error = |message: String| Error::Parse {
            template: template.to_owned(),
            message,
        };
        let items = Parser::new(template).template().map_err(error)?;
        let segments = nest(items).map_err(error)?;
        Ok(Self {
            source: template.to_owned(),
            segments,
        })
    }

    /// Renders the template against `object` as `kubectl -o jsonpath=…` does.
    pub fn render(&self, object: &Value) -> Result<String, Error> {
        let mut out = String::new();
        for results in self.results(object)? {
            for (idx, value) in results.iter().enumerate() {
                if idx > 0 {
                    out.push(' ');
                }
                write_text(&mut out, value);
            }
        }
        Ok(out)
    }

    /// Renders the template as `kubectl -o jsonpath-as-json=…` does: the results
    /// of every action (and every piece of text) as an indented JSON array.
    pub fn render_as_json(&self, object: &Value) -> Result<String, Error> {
        let mut out = String::new();
        for results in self.results(object)? {
            let array = Value::Array(results.into_iter().cloned().collect());
            write_json(&mut out, &array, Some(0));
            out.push('\n');
        }
        Ok(out)
    }

    /// The results of each printed piece, in order.
    fn results<'a>(&'a self, object: &'a Value) -> Result<Vec<Vec<&'a Value>>, Error> {
        let mut results = Vec::new();
        collect(&self.segments, object, &mut results).map_err(|message| Error::Execute {
            template: self.source.clone(),
            message,
        })?;
        Ok(results)
    }
}

/// One piece of a template.
#[derive(Debug, Clone)]
enum Segment {
    /// Text outside braces, a JSON string so results can borrow it.
    Text(Value),
    /// `{…}`: a chain of nodes applied to the current object.
    Action(Vec<Node>),
    /// `{range …}…{end}`: `body` rendered once per result of `path`.
    Range { path: Vec<Node>, body: Vec<Segment> },
}

/// The flat form of a template before `range` and `end` are matched.
enum Item {
    Text(String),
    Action(Vec<Node>),
    Range(Vec<Node>),
    End,
}

/// One step of an action, mapping the current values to new ones.
#[derive(Debug, Clone)]
enum Node {
    /// `.name`: the field of every map that has it.
    Field(String),
    /// `['key']`: the key itself when a map has it (`['a.b']` reads the key
    /// `a.b`), otherwise `path` (`.a.b`), as client-go reads it.
    Key { key: String, path: Vec<Node> },
    /// `.*` or `[*]` on maps: every value.
    Wildcard,
    /// `[n]`, `[start:end:step]`.
    Slice(Slice),
    /// `[a,b]`: each branch applied to the values, results concatenated.
    Union(Vec<Vec<Node>>),
    /// `[?(…)]`: the list items for which the condition holds.
    Filter(Box<Filter>),
    /// `..`: the values and all maps and lists inside them.
    Recursive,
    /// Quoted text: itself, whatever the values.
    Text(Value),
    /// A number, `true` or `false`: itself, once per value.
    Literal(Value),
    /// The `range` keyword, only valid first in an action.
    RangeKeyword,
    /// The `end` keyword, only valid alone in an action.
    EndKeyword,
}

/// The bounds of `[start:end:step]`, as client-go keeps them.
#[derive(Debug, Clone, Copy)]
struct Slice {
    start: Option<i64>,
    end: SliceEnd,
    step: Option<i64>,
}

/// The end of a slice: absent (`[1:]`), given, or implied by an index (`[1]`).
#[derive(Debug, Clone, Copy)]
enum SliceEnd {
    Unknown,
    Known(i64),
    Derived(i64),
}

/// `[?(left op right)]` or `[?(left)]` (`op` absent: the left side exists).
#[derive(Debug, Clone)]
struct Filter {
    left: Vec<Node>,
    comparison: Option<(Operator, Vec<Node>)>,
}

/// A filter's comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equal,
    NotEqual,
    Less,
    Greater,
    LessEqual,
    GreaterEqual,
}

type ParseResult<T> = Result<T, String>;

/// A cursor over a template; errors are client-go's messages.
struct Parser<'s> {
    input: &'s str,
    pos: usize,
}

impl<'s> Parser<'s> {
    fn new(input: &'s str) -> Self {
        Self { input, pos: 0 }
    }

    fn rest(&self) -> &'s str {
        &self.input[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// The whole template: text and actions.
    fn template(&mut self) -> ParseResult<Vec<Item>> {
        let mut items = Vec::new();
        while !self.rest().is_empty() {
            let text_len = self.rest().find('{').unwrap_or(self.rest().len());
            if text_len > 0 {
                items.push(Item::Text(self.rest()[..text_len].to_owned()));
                self.pos += text_len;
                continue;
            }
            self.pos += 1;
            let nodes = self.action()?;
            items.push(classify(nodes)?);
        }
        Ok(items)
    }

    /// The nodes of one action, after its `{` and through its `}`.
    fn action(&mut self) -> ParseResult<Vec<Node>> {
        let mut nodes = Vec::new();
        loop {
            let rest = self.rest();
            if rest.starts_with('}') {
                self.pos += 1;
                return Ok(nodes);
            }
            if rest.starts_with("[?(") {
                self.pos += 3;
                nodes.push(self.filter()?);
                continue;
            }
            if rest.starts_with("..") {
                if matches!(nodes.last(), Some(Node::Recursive)) {
                    return Err("invalid multiple recursive descent".to_owned());
                }
                self.pos += 2;
                nodes.push(Node::Recursive);
                if self.peek().is_some_and(is_alphanumeric) {
                    nodes.push(self.field());
                }
                continue;
            }
            match self.next() {
                None | Some('\n' | '\r') => return Err("unclosed action".to_owned()),
                Some(' ' | '\t' | '@' | '$') => {}
                Some('[') => nodes.push(self.array()?),
                Some(quote @ ('"' | '\'')) => {
                    nodes.push(Node::Text(Value::String(self.quoted(quote)?)))
                }
                Some('.') => nodes.push(self.field()),
                Some(c) if c == '+' || c == '-' || c.is_ascii_digit() => {
                    self.pos -= 1;
                    nodes.push(self.number()?);
                }
                Some(c) if is_alphanumeric(c) => {
                    self.pos -= c.len_utf8();
                    nodes.push(self.identifier()?);
                }
                Some(c) => {
                    return Err(format!(
                        "unrecognized character in action: U+{:04X} {c:?}",
                        u32::from(c)
                    ));
                }
            }
        }
    }

    /// A field name up to the next unescaped terminator; `\x` stands for `x`.
    fn field(&mut self) -> Node {
        let mut name = String::new();
        let mut escaped_any = false;
        while let Some(c) = self.peek() {
            if c == '\\' {
                self.pos += 1;
                escaped_any = true;
                if let Some(escaped) = self.next() {
                    name.push(escaped);
                }
                continue;
            }
            if is_terminator(c) {
                break;
            }
            self.pos += c.len_utf8();
            name.push(c);
        }
        if !escaped_any && name == "*" {
            Node::Wildcard
        } else {
            Node::Field(name)
        }
    }

    /// `range`, `end`, `true` or `false`.
    fn identifier(&mut self) -> ParseResult<Node> {
        let start = self.pos;
        while self.peek().is_some_and(|c| !is_terminator(c)) {
            self.next();
        }
        match &self.input[start..self.pos] {
            "range" => Ok(Node::RangeKeyword),
            "end" => Ok(Node::EndKeyword),
            "true" => Ok(Node::Literal(Value::Bool(true))),
            "false" => Ok(Node::Literal(Value::Bool(false))),
            other => Err(format!("unrecognized identifier {other}")),
        }
    }

    /// An integer or a float, with an optional sign.
    fn number(&mut self) -> ParseResult<Node> {
        let start = self.pos;
        if matches!(self.peek(), Some('+' | '-')) {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c == '.' || c.is_ascii_digit()) {
            self.pos += 1;
        }
        let text = &self.input[start..self.pos];
        let digits = text.strip_prefix('+').unwrap_or(text);
        if let Ok(integer) = digits.parse::<i64>() {
            return Ok(Node::Literal(Value::from(integer)));
        }
        digits
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(|number| Node::Literal(Value::Number(number)))
            .ok_or_else(|| format!("cannot parse number {text}"))
    }

    /// A quoted string after its opening `quote`, with Go's escapes.
    fn quoted(&mut self, quote: char) -> ParseResult<String> {
        let start = self.pos;
        loop {
            match self.next() {
                None | Some('\n') => return Err("unterminated quoted string".to_owned()),
                Some('\\') => {
                    self.next();
                }
                Some(c) if c == quote => break,
                Some(_) => {}
            }
        }
        let raw = &self.input[start..self.pos - 1];
        unquote(raw)
            .ok_or_else(|| format!("unquote string {quote}{raw}{quote} error invalid syntax"))
    }

    /// `[…]` after its `[`: an index, a slice, a union or a quoted key.
    fn array(&mut self) -> ParseResult<Node> {
        let start = self.pos;
        loop {
            match self.next() {
                None | Some('\n') => return Err("unterminated array".to_owned()),
                Some(']') => break,
                Some(_) => {}
            }
        }
        let text = &self.input[start..self.pos - 1];
        array_node(text)
    }

    /// `[?(…)]` after its `[?(`.
    fn filter(&mut self) -> ParseResult<Node> {
        let start = self.pos;
        let mut quote = None;
        loop {
            match (self.next(), quote) {
                (None | Some('\n'), _) => return Err("unterminated filter".to_owned()),
                (Some('\\'), Some(_)) => {
                    self.next();
                }
                (Some(c), Some(open)) if c == open => quote = None,
                (Some(c @ ('"' | '\'')), None) => quote = Some(c),
                (Some(')'), None) => break,
                _ => {}
            }
        }
        let text = &self.input[start..self.pos - 1];
        if self.next() != Some(']') {
            return Err("unclosed array expect ]".to_owned());
        }
        let is_operator = |c: char| matches!(c, '!' | '<' | '>' | '=');
        let Some(op_start) = text.find(is_operator).filter(|&idx| idx > 0) else {
            return Ok(Node::Filter(Box::new(Filter {
                left: sub_action(text)?,
                comparison: None,
            })));
        };
        let op_len = text[op_start..]
            .find(|c: char| !is_operator(c))
            .unwrap_or(text.len() - op_start);
        let (left, op, right) = (
            &text[..op_start],
            &text[op_start..op_start + op_len],
            &text[op_start + op_len..],
        );
        if right.is_empty() {
            return Err(format!("invalid filter {text}"));
        }
        let operator = match op {
            "==" => Operator::Equal,
            "!=" => Operator::NotEqual,
            "<" => Operator::Less,
            ">" => Operator::Greater,
            "<=" => Operator::LessEqual,
            ">=" => Operator::GreaterEqual,
            other => return Err(format!("unrecognized filter operator {other}")),
        };
        Ok(Node::Filter(Box::new(Filter {
            left: sub_action(left)?,
            comparison: Some((operator, sub_action(right)?)),
        })))
    }
}

/// The node of `[text]`.
fn array_node(text: &str) -> ParseResult<Node> {
    let text = if text == "*" { ":" } else { text };
    if text.contains(',') {
        let branches = text
            .split(',')
            .map(|part| sub_action(&format!("[{}]", part.trim_matches(' '))))
            .collect::<ParseResult<Vec<_>>>()?;
        return Ok(Node::Union(branches));
    }
    let quoted = ['\'', '"'].into_iter().find_map(|quote| {
        text.strip_prefix(quote)
            .and_then(|t| t.strip_suffix(quote))
            .filter(|key| !key.contains(quote))
    });
    if let Some(quoted_key) = quoted {
        let key = quoted_key.replace('\\', "");
        // Keys that are no path (`['my key']`) are only read as keys.
        let path = sub_action(&format!(".{quoted_key}"))
            .unwrap_or_else(|_| vec![Node::Field(key.clone())]);
        return Ok(Node::Key { key, path });
    }
    let parts: Vec<&str> = text.split(':').collect();
    let is_index = |part: &str| {
        let digits = part.strip_prefix('-').unwrap_or(part);
        digits.chars().all(|c| c.is_ascii_digit())
    };
    if parts.len() > 3 || !parts.iter().all(|part| is_index(part)) {
        return Err(format!("invalid array index {text}"));
    }
    let number = |part: &str| {
        part.parse::<i64>()
            .map_err(|_| format!("array index {part} is not a number"))
    };
    let optional = |part: Option<&&str>| match part {
        None | Some(&"") => Ok(None),
        Some(part) => number(part).map(Some),
    };
    let start = optional(parts.first())?;
    let end = match parts.get(1) {
        None => SliceEnd::Derived(start.unwrap_or(0) + 1),
        Some(&"") => SliceEnd::Unknown,
        Some(part) => SliceEnd::Known(number(part)?),
    };
    let step = optional(parts.get(2))?;
    Ok(Node::Slice(Slice { start, end, step }))
}

/// Parses `text` as the inside of one action (filter sides, union branches).
fn sub_action(text: &str) -> ParseResult<Vec<Node>> {
    let wrapped = format!("{text}}}");
    let mut parser = Parser::new(&wrapped);
    let nodes = parser.action()?;
    if nodes
        .iter()
        .any(|node| matches!(node, Node::RangeKeyword | Node::EndKeyword))
    {
        return Err(format!("unexpected range or end in {text}"));
    }
    Ok(nodes)
}

/// Whether `c` ends a field name.
fn is_terminator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\r' | '\n' | '.' | ',' | '[' | ']' | '$' | '@' | '{' | '}'
    )
}

/// Whether `c` may start an identifier or a field after `..`.
fn is_alphanumeric(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Tells `{range …}` and `{end}` from ordinary actions.
fn classify(nodes: Vec<Node>) -> ParseResult<Item> {
    let keyword_at = nodes
        .iter()
        .position(|node| matches!(node, Node::RangeKeyword | Node::EndKeyword));
    match (keyword_at, nodes.first()) {
        (None, _) => Ok(Item::Action(nodes)),
        (Some(0), Some(Node::EndKeyword)) if nodes.len() == 1 => Ok(Item::End),
        (Some(0), Some(Node::RangeKeyword))
            if !nodes[1..]
                .iter()
                .any(|node| matches!(node, Node::RangeKeyword | Node::EndKeyword)) =>
        {
            Ok(Item::Range(nodes.into_iter().skip(1).collect()))
        }
        _ => Err("range and end must each begin their own action".to_owned()),
    }
}

/// Matches `{range}` with `{end}`, nesting the bodies.
fn nest(items: Vec<Item>) -> ParseResult<Vec<Segment>> {
    // Each open range: its path and the segments of its body so far.
    let mut open: Vec<(Vec<Node>, Vec<Segment>)> = Vec::new();
    let mut top = Vec::new();
    for item in items {
        let segment = match item {
            Item::Text(text) => Segment::Text(Value::String(text)),
            Item::Action(nodes) => Segment::Action(nodes),
            Item::Range(path) => {
                open.push((path, Vec::new()));
                continue;
            }
            Item::End => match open.pop() {
                Some((path, body)) => Segment::Range { path, body },
                None => return Err("not in range, nothing to end".to_owned()),
            },
        };
        match open.last_mut() {
            Some((_, body)) => body.push(segment),
            None => top.push(segment),
        }
    }
    if open.is_empty() {
        Ok(top)
    } else {
        Err("unclosed range, expect {end}".to_owned())
    }
}

/// Go's `strconv.Unquote` escapes, for either quote.
fn unquote(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let escaped = chars.next()?;
        let mut hex = |n: usize| -> Option<char> {
            let digits: String = (0..n).filter_map(|_| chars.next()).collect();
            if digits.len() != n {
                return None;
            }
            u32::from_str_radix(&digits, 16)
                .ok()
                .and_then(char::from_u32)
        };
        let decoded = match escaped {
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            '\\' | '\'' | '"' => escaped,
            'x' => hex(2)?,
            'u' => hex(4)?,
            'U' => hex(8)?,
            '0'..='7' => {
                let mut value = escaped.to_digit(8)?;
                for _ in 0..2 {
                    value = value * 8 + chars.next()?.to_digit(8)?;
                }
                char::from_u32(value).filter(|_| value <= 0xff)?
            }
            _ => return None,
        };
        out.push(decoded);
    }
    Some(out)
}

type EvalResult<T> = Result<T, String>;

/// Appends the results of each printed piece of `segments` to `out`.
fn collect<'a>(
    segments: &'a [Segment],
    current: &'a Value,
    out: &mut Vec<Vec<&'a Value>>,
) -> EvalResult<()> {
    for segment in segments {
        match segment {
            Segment::Text(text) => out.push(vec![text]),
            Segment::Action(nodes) => out.push(eval(nodes, vec![current])?),
            Segment::Range { path, body } => {
                for item in eval(path, vec![current])? {
                    collect(body, item, out)?;
                }
            }
        }
    }
    Ok(())
}

/// Applies `nodes` in turn, starting from `input`.
fn eval<'a>(nodes: &'a [Node], input: Vec<&'a Value>) -> EvalResult<Vec<&'a Value>> {
    nodes
        .iter()
        .try_fold(input, |values, node| eval_node(node, values))
}

fn eval_node<'a>(node: &'a Node, input: Vec<&'a Value>) -> EvalResult<Vec<&'a Value>> {
    let mut results = Vec::new();
    match node {
        Node::Field(name) => {
            results.extend(
                input
                    .into_iter()
                    .filter_map(|value| value.get(name.as_str())),
            );
        }
        Node::Key { key, path } => {
            for value in input {
                match value.as_object().and_then(|map| map.get(key)) {
                    Some(found) => results.push(found),
                    None => results.extend(eval(path, vec![value])?),
                }
            }
        }
        Node::Wildcard => {
            for value in input {
                match value {
                    Value::Object(map) => results.extend(map.values()),
                    Value::Array(items) => results.extend(items),
                    _ => {}
                }
            }
        }
        Node::Slice(slice) => {
            for value in input {
                match value {
                    Value::Null => {}
                    Value::Array(items) => results.extend(slice_items(*slice, items)?),
                    other => return Err(format!("{} is not array or slice", go_type(other))),
                }
            }
        }
        Node::Union(branches) => {
            for branch in branches {
                results.extend(eval(branch, input.clone())?);
            }
        }
        Node::Filter(filter) => {
            for value in input {
                match value {
                    Value::Null => {}
                    Value::Array(items) => {
                        for item in items {
                            if filter_matches(filter, item)? {
                                results.push(item);
                            }
                        }
                    }
                    other => {
                        return Err(format!(
                            "{} is not array or slice and cannot be filtered",
                            to_json(other)
                        ));
                    }
                }
            }
        }
        Node::Recursive => descend(&input, &mut results),
        Node::Text(text) => results.push(text),
        Node::Literal(literal) => results.extend(input.iter().map(|_| literal)),
        Node::RangeKeyword | Node::EndKeyword => {
            return Err("range and end must each begin their own action".to_owned());
        }
    }
    Ok(results)
}

/// client-go's slice semantics: negative bounds count from the end, and bounds
/// outside the list are errors rather than clamped.
fn slice_items(slice: Slice, items: &[Value]) -> EvalResult<impl Iterator<Item = &Value>> {
    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let mut start = slice.start.unwrap_or(0);
    if start < 0 {
        start += len;
    }
    let end = match slice.end {
        SliceEnd::Unknown => len,
        SliceEnd::Known(end) if end < 0 => end + len,
        SliceEnd::Known(end) => end,
        SliceEnd::Derived(end) if end <= 0 => end + len,
        SliceEnd::Derived(end) => end,
    };
    let empty = start == end;
    if !empty {
        if start >= len || start < 0 {
            return Err(format!(
                "array index out of bounds: index {start}, length {len}"
            ));
        }
        if end > len || end < 0 {
            return Err(format!(
                "array index out of bounds: index {}, length {len}",
                end - 1
            ));
        }
        if start > end {
            return Err(format!(
                "starting index {start} is greater than ending index {end}"
            ));
        }
    }
    let step = match slice.step {
        Some(step) if step <= 0 && !empty => return Err("step must be > 0".to_owned()),
        Some(step) => step.max(1),
        None => 1,
    };
    let (start, end, step) = if empty {
        (0, 0, 1)
    } else {
        // The bounds were checked against the length above.
        (start as usize, end as usize, step as usize)
    };
    Ok(items[start..end].iter().step_by(step))
}

/// `..`: every value that has children, followed by its descendants, depth first.
fn descend<'a>(input: &[&'a Value], out: &mut Vec<&'a Value>) {
    for &value in input {
        let children: Vec<&Value> = match value {
            Value::Object(map) => map.values().collect(),
            Value::Array(items) => items.iter().collect(),
            _ => Vec::new(),
        };
        let non_empty_string = value.as_str().is_some_and(|s| !s.is_empty());
        if !children.is_empty() || non_empty_string {
            out.push(value);
            descend(&children, out);
        }
    }
}

/// Whether a list item passes `filter`.
fn filter_matches(filter: &Filter, item: &Value) -> EvalResult<bool> {
    let Some((operator, right)) = &filter.comparison else {
        return Ok(eval(&filter.left, vec![item]).is_ok_and(|lefts| !lefts.is_empty()));
    };
    // A null side counts as missing: Go would fail on comparing nil, which only
    // makes a filter unusable on lists where some items have the field null.
    let single = |values: Vec<&Value>| -> EvalResult<Option<Value>> {
        match values.as_slice() {
            [] | [Value::Null] => Ok(None),
            [value] => Ok(Some((*value).clone())),
            _ => Err("can only compare one element at a time".to_owned()),
        }
    };
    let Some(left) = single(eval(&filter.left, vec![item])?)? else {
        return Ok(false);
    };
    let Some(right) = single(eval(right, vec![item])?)? else {
        return Ok(false);
    };
    compare(*operator, &left, &right)
}

/// Go template's comparison rules: numbers with numbers (integers with floats
/// too, which Go refuses), strings with strings, booleans only for
/// (in)equality; anything else is an error.
fn compare(operator: Operator, left: &Value, right: &Value) -> EvalResult<bool> {
    use std::cmp::Ordering;
    let ordering = match (left, right) {
        (Value::Number(left), Value::Number(right)) => match (left.as_i64(), right.as_i64()) {
            (Some(left), Some(right)) => Some(left.cmp(&right)),
            _ => {
                let left = left.as_f64().unwrap_or(f64::NAN);
                let right = right.as_f64().unwrap_or(f64::NAN);
                left.partial_cmp(&right)
            }
        },
        (Value::String(left), Value::String(right)) => Some(left.cmp(right)),
        (Value::Bool(left), Value::Bool(right)) => {
            return match operator {
                Operator::Equal => Ok(left == right),
                Operator::NotEqual => Ok(left != right),
                _ => Err("invalid type for comparison".to_owned()),
            };
        }
        (Value::Null | Value::Array(_) | Value::Object(_), _)
        | (_, Value::Null | Value::Array(_) | Value::Object(_)) => {
            return Err("invalid type for comparison".to_owned());
        }
        _ => return Err("incompatible types for comparison".to_owned()),
    };
    Ok(match operator {
        Operator::Equal => ordering == Some(Ordering::Equal),
        Operator::NotEqual => ordering != Some(Ordering::Equal),
        Operator::Less => ordering == Some(Ordering::Less),
        Operator::Greater => ordering == Some(Ordering::Greater),
        Operator::LessEqual => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
        Operator::GreaterEqual => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
    })
}

/// The Go type name client-go's messages use for a decoded JSON value.
fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(number) if number.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Appends `value` as kubectl prints one result: strings raw, scalars with Go's
/// `%v`, maps and lists as compact JSON.
fn write_text(out: &mut String, value: &Value) {
    match value {
        Value::String(text) => out.push_str(text),
        Value::Number(number) => match number.as_f64() {
            Some(float) if number.is_f64() => out.push_str(&go_float(float, false)),
            _ => out.push_str(&number.to_string()),
        },
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Array(_) | Value::Object(_) => write_json(out, value, None),
    }
}

/// `value` as compact JSON, as Go's `encoding/json` writes it.
fn to_json(value: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, value, None);
    out
}

/// Appends `value` as Go's `encoding/json` writes it: map keys sorted, `<`, `>`
/// and `&` escaped; `indent` is the depth for `MarshalIndent(…, "", "    ")`,
/// `None` for compact output.
fn write_json(out: &mut String, value: &Value, indent: Option<usize>) {
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"    ".repeat(depth));
    };
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => match number.as_f64() {
            Some(float) if number.is_f64() => out.push_str(&go_float(float, true)),
            _ => out.push_str(&number.to_string()),
        },
        Value::String(text) => write_json_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (idx, item) in items.iter().enumerate() {
                if idx > 0 {
                    out.push(',');
                }
                if let Some(depth) = indent {
                    newline(out, depth + 1);
                }
                write_json(out, item, indent.map(|depth| depth + 1));
            }
            if let (Some(depth), false) = (indent, items.is_empty()) {
                newline(out, depth);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (idx, key) in keys.iter().enumerate() {
                if idx > 0 {
                    out.push(',');
                }
                if let Some(depth) = indent {
                    newline(out, depth + 1);
                }
                write_json_string(out, key);
                out.push(':');
                if indent.is_some() {
                    out.push(' ');
                }
                write_json(out, &map[*key], indent.map(|depth| depth + 1));
            }
            if let (Some(depth), false) = (indent, map.is_empty()) {
                newline(out, depth);
            }
            out.push('}');
        }
    }
}

/// A JSON string with Go's HTML-safe escaping.
fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A float as Go prints it, with the shortest digits that round-trip: `%v`
/// (`json == false`) switches to exponent form below 1e-4 and from 1e6 on
/// (`1e+06`), `encoding/json` below 1e-6 and from 1e21 on (`1e+21`, `1e-7`).
fn go_float(value: f64, json: bool) -> String {
    if value == 0.0 {
        return if value.is_sign_negative() && !json {
            "-0".to_owned()
        } else {
            "0".to_owned()
        };
    }
    // `{:e}` gives the shortest round-trip digits: `1.5e6`, `-2e-7`.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .map(|(mantissa, exponent)| (mantissa, exponent.parse::<i32>().unwrap_or(0)))
        .unwrap_or((scientific.as_str(), 0));
    let use_exponent = if json {
        let magnitude = value.abs();
        !(1e-6..1e21).contains(&magnitude)
    } else {
        !(-4..6).contains(&exponent)
    };
    if !use_exponent {
        return format!("{value}");
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    let digits = exponent.unsigned_abs();
    if json {
        format!("{mantissa}e{sign}{digits}")
    } else {
        format!("{mantissa}e{sign}{digits:02}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Renders `template` against `input`: the output, or the error's text.
    fn check(template: &str, input: &Value, expected: &str) {
        let actual = Template::parse(template)
            .and_then(|parsed| parsed.render(input))
            .unwrap_or_else(|error| format!("error: {error}"));
        assert_eq!(actual, expected, "template {template}");
    }

    /// The input of the examples on kubectl's JSONPath reference page and in
    /// client-go's tests.
    fn nodes() -> Value {
        json!({
            "kind": "List",
            "items": [
                {
                    "kind": "None",
                    "metadata": {
                        "name": "127.0.0.1",
                        "labels": {"kubernetes.io/hostname": "127.0.0.1"},
                    },
                    "status": {
                        "capacity": {"cpu": "4"},
                        "ready": true,
                        "addresses": [{"type": "LegacyHostIP", "address": "127.0.0.1"}],
                    },
                },
                {
                    "kind": "None",
                    "metadata": {
                        "name": "127.0.0.2",
                        "labels": {"kubernetes.io/hostname": "127.0.0.2"},
                    },
                    "status": {
                        "capacity": {"cpu": "8"},
                        "ready": false,
                        "addresses": [
                            {"type": "LegacyHostIP", "address": "127.0.0.2"},
                            {"type": "another", "address": "127.0.0.3"},
                        ],
                    },
                },
            ],
            "users": [
                {"name": "myself", "user": {}},
                {"name": "e2e", "user": {"username": "admin", "password": "secret"}},
            ],
        })
    }

    #[test]
    fn kubectl_reference_examples() {
        let input = nodes();
        let cases = [
            ("kind is {.kind}", "kind is List"),
            ("{.kind}", "List"),
            ("{['kind']}", "List"),
            ("{$.kind}", "List"),
            ("{..name}", "127.0.0.1 127.0.0.2 myself e2e"),
            ("{.items[*].metadata.name}", "127.0.0.1 127.0.0.2"),
            ("{.users[0].name}", "myself"),
            (
                "{.items[*]['metadata.name', 'status.capacity']}",
                r#"127.0.0.1 127.0.0.2 {"cpu":"4"} {"cpu":"8"}"#,
            ),
            (r#"{.users[?(@.name=="e2e")].user.password}"#, "secret"),
            (
                "{range .items[*]}[{.metadata.name}, {.status.capacity}] {end}",
                r#"[127.0.0.1, {"cpu":"4"}] [127.0.0.2, {"cpu":"8"}] "#,
            ),
            (
                r"{range .items[*]}{.metadata.name}{'\t'}{end}",
                "127.0.0.1\t127.0.0.2\t",
            ),
            (
                r#"{range .items[*]}{.metadata.name}{"\n"}{end}"#,
                "127.0.0.1\n127.0.0.2\n",
            ),
            (
                r"{.items[0].metadata.labels.kubernetes\.io/hostname}",
                "127.0.0.1",
            ),
            (
                "{.items[0].metadata.labels['kubernetes.io/hostname']}",
                "127.0.0.1",
            ),
            (
                "{range .items[*]}{.metadata.name}, {end}{.kind}",
                "127.0.0.1, 127.0.0.2, List",
            ),
            (
                "{.items[*].status.addresses[*].address}",
                "127.0.0.1 127.0.0.2 127.0.0.3",
            ),
            (
                "{range .items[*]}{range .status.addresses[*]}{.address}, {end}{end}",
                "127.0.0.1, 127.0.0.2, 127.0.0.3, ",
            ),
            (
                r#"{.items[?(@.metadata.labels.kubernetes\.io/hostname=="127.0.0.1")].kind}"#,
                "None",
            ),
            ("{.items[?(@..ready==true)].metadata.name}", "127.0.0.1"),
            (
                r#"{.items[?(@.status.addresses[0].type!="x")].metadata.name}"#,
                "127.0.0.1 127.0.0.2",
            ),
            ("{.users[?(@.user.password)].name}", "e2e"),
            ("{.users[-1].name}", "e2e"),
            ("{.users[0:2].name}", "myself e2e"),
            ("{.users[1:].name}", "e2e"),
            (
                "{.users[*].user}",
                r#"{} {"password":"secret","username":"admin"}"#,
            ),
            ("{.users[1].user.*}", "secret admin"),
            ("{@.users[0]}", r#"{"name":"myself","user":{}}"#),
            ("{range .users[*]}{@.name}{\"\\n\"}{end}", "myself\ne2e\n"),
            // Missing keys print nothing (kubectl's --allow-missing-template-keys).
            ("before-{.hello}after", "before-after"),
            ("{.items[*].metadata.missing}", ""),
            ("{range .missing[*]}x{end}done", "done"),
            (r#"{"{"}"#, "{"),
        ];
        for (template, expected) in cases {
            check(template, &input, expected);
        }
    }

    #[test]
    fn values_and_filters() {
        let input = json!({
            "integers": [1, 2, 3, 4],
            "floats": [1.0, 2.2, 3.3, 4.0],
            "strings": ["one", "two", "three", "four"],
            "mixed": [true, "one", 1, 1.1, null],
            "big": [1_000_000.0, 0.00001, 123_456.0, 1e21],
            "html": {"a": "<b>&"},
            "points": [
                {"id": "i1", "x": 4, "y": -5},
                {"id": "i2", "x": -2, "y": -5, "z": 1},
                {"id": "i3", "x": 8, "y": 3},
                {"id": "i5", "x": 0, "y": 2, "z": 1},
                {"id": "i7", "x": null, "y": 4},
            ],
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "PodScheduled", "status": "True"},
            ],
            "a.b": "dotted",
            "spaced": {"my key": "yes"},
            "a": {"b": "nested"},
        });
        let cases = [
            ("{.integers}", "[1,2,3,4]"),
            ("{.integers[-2]}", "3"),
            ("{.integers[:2]}", "1 2"),
            ("{.integers[:4:2]}", "1 3"),
            ("{.integers[1::2]}", "2 4"),
            ("{.integers[-1:]}", "4"),
            ("{.integers[2:2]}", ""),
            ("{.integers[0,3]}", "1 4"),
            ("{.floats}", "[1,2.2,3.3,4]"),
            ("{.floats[1]}", "2.2"),
            ("{.strings[0:2]}", "one two"),
            ("{.mixed}", r#"[true,"one",1,1.1,null]"#),
            ("{.mixed[*]}", "true one 1 1.1 null"),
            ("{.big[*]}", "1e+06 1e-05 123456 1e+21"),
            ("{.big}", "[1000000,0.00001,123456,1e+21]"),
            ("{.html}", r#"{"a":"\u003cb\u003e\u0026"}"#),
            ("{.html.a}", "<b>&"),
            ("{.points[?(@.z)].id}", "i2 i5"),
            ("{.points[?(@.x<1)].id}", "i2 i5"),
            ("{.points[?(@.x>=4)].id}", "i1 i3"),
            ("{.points[?(@.y<=-5)].id}", "i1 i2"),
            ("{.points[?(@.x!=0)].id}", "i1 i2 i3"),
            ("{.points[?(@.x > 2.5)].id}", "i1 i3"),
            ("{.points[-1]['x']}", "null"),
            ("{.points[?(@.id>\"i3\")].id}", "i5 i7"),
            (r#"{.conditions[?(@.type=="Ready")].status}"#, "True"),
            (
                r#"{range .conditions[?(@.status=='True')]}{.type}={.status};{end}"#,
                "Ready=True;PodScheduled=True;",
            ),
            ("{['a.b']}", "dotted"),
            ("{.a['b']}", "nested"),
            ("{.spaced['my key']}", "yes"),
            ("{$.a}", r#"{"b":"nested"}"#),
            ("{5}", "5"),
            // Errors, in client-go's words.
            (
                "{.integers[4]}",
                r#"error: error executing jsonpath "{.integers[4]}": array index out of bounds: index 4, length 4"#,
            ),
            (
                "{.integers[-5]}",
                r#"error: error executing jsonpath "{.integers[-5]}": array index out of bounds: index -1, length 4"#,
            ),
            (
                "{.integers[0:5]}",
                r#"error: error executing jsonpath "{.integers[0:5]}": array index out of bounds: index 4, length 4"#,
            ),
            (
                "{.integers[3:1]}",
                r#"error: error executing jsonpath "{.integers[3:1]}": starting index 3 is greater than ending index 1"#,
            ),
            (
                "{.html[0]}",
                r#"error: error executing jsonpath "{.html[0]}": map[string]interface {} is not array or slice"#,
            ),
            (
                r#"{.points[?(@.x=="4")]}"#,
                r#"error: error executing jsonpath "{.points[?(@.x==\"4\")]}": incompatible types for comparison"#,
            ),
            (
                "{.points[?(@.x<>1)]}",
                "error: error parsing jsonpath {.points[?(@.x<>1)]}, unrecognized filter operator <>",
            ),
            (
                "{hello}",
                "error: error parsing jsonpath {hello}, unrecognized identifier hello",
            ),
            ("{.a", "error: error parsing jsonpath {.a, unclosed action"),
            (
                "{range .integers[*]}{@}{end}{end}",
                "error: error parsing jsonpath {range .integers[*]}{@}{end}{end}, not in range, nothing to end",
            ),
            (
                "{range .integers[*]}{@}",
                "error: error parsing jsonpath {range .integers[*]}{@}, unclosed range, expect {end}",
            ),
            (
                "{....a}",
                "error: error parsing jsonpath {....a}, invalid multiple recursive descent",
            ),
            (
                "{.integers[a]}",
                "error: error parsing jsonpath {.integers[a]}, invalid array index a",
            ),
        ];
        for (template, expected) in cases {
            check(template, &input, expected);
        }
    }

    #[test]
    fn json_output() {
        let template = Template::parse("{.items[*].metadata.name}{.kind}{.none}").expect("valid");
        let rendered = template.render_as_json(&nodes()).expect("renders");
        assert_eq!(
            rendered,
            "[\n    \"127.0.0.1\",\n    \"127.0.0.2\"\n]\n[\n    \"List\"\n]\n[]\n"
        );
    }
}
