//! One MCP server tool as a [`crate::tools::Tool`] named `server/tool`: its
//! description and schema from the server's `tools/list`, its side-effect class from
//! the config, its calls sent to the server. Errors the server reports (an `isError`
//! result, a JSON-RPC error) are [`ToolError::Failed`] with the server's text.

use super::server::McpServer;
use crate::tools::{SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo};
use rmcp::model::{CallToolResult, RawContent};
use std::sync::Arc;

/// A granted (or grantable) tool of an MCP server.
pub struct McpTool {
    server: Arc<McpServer>,
    /// The server's own name for it.
    tool: String,
    /// `server/tool`.
    name: String,
    side_effect: SideEffect,
}

impl McpTool {
    pub fn new(server: Arc<McpServer>, tool: &str) -> McpTool {
        let config = server.config();
        McpTool {
            name: format!("{}/{tool}", config.name),
            side_effect: config.effect_of(tool),
            tool: tool.to_string(),
            server,
        }
    }

    /// The description from a listing of the server's tools, if it has this one.
    fn info_in_listing(&self, tools: &[rmcp::model::Tool]) -> Option<ToolInfo> {
        let t = tools.iter().find(|t| t.name == self.tool)?;
        Some(ToolInfo {
            name: self.name.clone(),
            description: t
                .description
                .as_deref()
                .or(t.title.as_deref())
                .unwrap_or_default()
                .to_string(),
            args_schema: serde_json::Value::Object((*t.input_schema).clone()),
            side_effect: self.side_effect,
            undo: None,
        })
    }
}

#[async_trait::async_trait]
impl Tool for McpTool {
    fn info(&self) -> ToolInfo {
        if let Some(info) = self.server.listed().and_then(|l| self.info_in_listing(&l)) {
            return info;
        }
        // Not listed yet: what the config says, without starting the server.
        ToolInfo {
            name: self.name.clone(),
            description: format!(
                "`{}` of MCP server `{}`",
                self.tool,
                self.server.config().name
            ),
            args_schema: serde_json::json!({ "type": "object" }),
            side_effect: self.side_effect,
            undo: None,
        }
    }

    async fn describe(&self) -> Option<ToolInfo> {
        match self.server.list_tools().await {
            Ok(tools) => self.info_in_listing(&tools),
            Err(e) => {
                // The server cannot be reached now: listed from the config, the
                // problem left to the call.
                tracing::warn!(tool = %self.name, "{e}");
                Some(self.info())
            }
        }
    }

    async fn call(&self, _ctx: &ToolCallCtx, args: serde_json::Value) -> Result<String, ToolError> {
        let resend_safe = matches!(self.side_effect, SideEffect::None | SideEffect::Idempotent);
        let result = self.server.call(&self.tool, args, resend_safe).await?;
        output(result)
    }
}

/// A call's result as the tool's output: the text blocks joined by newlines when all
/// blocks are text, else the blocks (and any structured content) as JSON; an error
/// result is a failure with its text.
pub fn output(result: CallToolResult) -> Result<String, ToolError> {
    let texts: Option<Vec<&str>> = result
        .content
        .iter()
        .map(|c| match &c.raw {
            RawContent::Text(t) => Some(t.text.as_str()),
            _ => None,
        })
        .collect();
    let out = match texts {
        Some(texts) if !texts.is_empty() || result.structured_content.is_none() => texts.join("\n"),
        _ => {
            let mut json = serde_json::json!({ "content": result.content });
            if let Some(s) = &result.structured_content {
                json["structuredContent"] = s.clone();
            }
            json.to_string()
        }
    };
    if result.is_error == Some(true) {
        return Err(ToolError::Failed(if out.is_empty() {
            "the MCP tool reported an error without a message".into()
        } else {
            out
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::Content;

    #[test]
    fn text_blocks_join_other_blocks_become_json_and_errors_fail() {
        let text = CallToolResult::success(vec![Content::text("a"), Content::text("b")]);
        assert_eq!(output(text).unwrap(), "a\nb");
        let image = CallToolResult::success(vec![
            Content::text("see"),
            Content::image("AAAA", "image/png"),
        ]);
        let json: serde_json::Value = serde_json::from_str(&output(image).unwrap()).unwrap();
        assert_eq!(json["content"][1]["mimeType"], "image/png");
        assert_eq!(json["content"][0]["text"], "see");
        let err = CallToolResult::error(vec![Content::text("no such file")]);
        assert_eq!(
            output(err).unwrap_err(),
            ToolError::Failed("no such file".into())
        );
    }
}
